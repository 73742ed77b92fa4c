"""A/B of two benchmark results folders: the same models and seeds trained two ways (a training option on and
off).

``python -m mnist_bench.benchmark.experiments.ab --a results/ema/off --b results/ema/on --labels "EMA off"
"EMA on"``

For each model in both, seed by seed: the two test accuracies, their difference, and McNemar's exact test on
the same test images (per-image predictions from the run folders; Holm-corrected over every test of the
comparison); over the seeds, each arm's mean with its 95% t interval and the mean difference with its own
interval (the seeds paired). Writes ``<output>.md`` and ``<output>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from mnist_bench.benchmark.report.row import percent
from mnist_bench.benchmark.report.stats import paired_tests, seed_interval
from mnist_bench.inference.outputs import owned
from mnist_bench.utils import read_json, write_json_atomic


def rows_of(results: Path, root: Path | None) -> list[dict[str, Any]]:
    """The ok rows of a benchmark's ``benchmark.json``, their run dirs resolved against ``root`` (the folder
    the benchmark ran in) when relative. A row whose figures are not numbers (an edited file) is refused."""
    from mnist_bench.benchmark.report.aggregate import bad_figure, predictions_disagree

    path = results / "benchmark.json"
    record = read_json(path)
    rows = []
    for row in record["rows"]:
        if not isinstance(row, dict) or row.get("status") != "ok":
            continue
        if (problem := bad_figure(row)) is not None:
            raise ValueError(
                f"{path}: the row of {row.get('model')!r} seed {row.get('seed')!r} is damaged: {problem}"
            )
        run_dir = Path(row.get("run_dir") or "")
        if row.get("run_dir") and not run_dir.is_absolute() and root is not None:
            row = {**row, "run_dir": str(root / run_dir)}
        if (edited := predictions_disagree(row.get("run_dir"), row.get("test/acc"))) is not None:
            raise ValueError(
                f"{path}: the row of {row.get('model')!r} seed {row.get('seed')!r} is not its run's: {edited}"
            )
        rows.append(row)
    return rows


def compare_benchmarks(rows_a: list[dict], rows_b: list[dict], label_a: str, label_b: str) -> dict[str, Any]:
    if label_a == label_b:
        raise ValueError(f"the two arms need different labels, both are {label_a!r}")
    for rows, label in ((rows_a, label_a), (rows_b, label_b)):
        runs = [(r["model"], r.get("seed")) for r in rows]
        if len(runs) != len(set(runs)):
            raise ValueError(f"{label}: a model and seed appear twice")
    seeds_of = {
        arm: {(r["model"], r.get("seed")) for r in rows} for arm, rows in (("a", rows_a), ("b", rows_b))
    }
    models = [
        m
        for m in dict.fromkeys(r["model"] for r in rows_a)
        if any(key[0] == m for key in seeds_of["a"] & seeds_of["b"])
    ]  # a seed in both arms
    arms = [
        {**r, "model": f"{r['model']} {label}"}
        for rows, label in ((rows_a, label_a), (rows_b, label_b))
        for r in rows
        if r["model"] in models
    ]
    tests, skipped = [], []
    for model in models:  # pairs within a model only: one family, Holm over all of them below
        found, missed = paired_tests([r for r in arms if r["model"].startswith(f"{model} ")])
        tests += found
        skipped += missed
    from mnist_bench.benchmark.report.stats import holm

    for test, adjusted in zip(tests, holm([t.p for t in tests]), strict=True):
        test.p_holm = adjusted
    summary = []
    for model in models:
        acc_a = {r["seed"]: r["test/acc"] for r in rows_a if r["model"] == model}
        acc_b = {r["seed"]: r["test/acc"] for r in rows_b if r["model"] == model}
        seeds = sorted(set(acc_a) & set(acc_b))
        diffs = [acc_b[s] - acc_a[s] for s in seeds]
        summary.append(
            {
                "model": model,
                "seeds": seeds,
                "acc_a": [acc_a[s] for s in seeds],
                "acc_b": [acc_b[s] for s in seeds],
                "mean_a": statistics.fmean(acc_a[s] for s in seeds),
                "mean_b": statistics.fmean(acc_b[s] for s in seeds),
                "ci_a": seed_interval([acc_a[s] for s in seeds]),
                "ci_b": seed_interval([acc_b[s] for s in seeds]),
                "mean_diff": statistics.fmean(diffs),
                "ci_diff": seed_interval(diffs),
                "fit_s_a": [
                    next(r.get("time/fit_s") for r in rows_a if r["model"] == model and r["seed"] == s)
                    for s in seeds
                ],
                "fit_s_b": [
                    next(r.get("time/fit_s") for r in rows_b if r["model"] == model and r["seed"] == s)
                    for s in seeds
                ],
            }
        )
    unofficial = [
        f"{r['model']} {label} (seed {r.get('seed')})"
        for rows, label in ((rows_a, label_a), (rows_b, label_b))
        for r in rows
        if r["model"] in models and r.get("test/official") is False
    ]
    return {
        "labels": [label_a, label_b],
        "summary": summary,
        "tests": [t.as_dict() for t in tests],
        "skipped": skipped,
        "unofficial_test_set": unofficial,
    }


def _seconds(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _ci(ci: tuple[float, float] | None, points: bool = False) -> str:
    if ci is None:
        return "—"
    scale = 100
    return (
        f"{scale * ci[0]:+.2f} to {scale * ci[1]:+.2f} points"
        if points
        else f"{scale * ci[0]:.2f}–{scale * ci[1]:.2f}%"
    )


def markdown(result: dict[str, Any], header: str) -> str:
    a, b = result["labels"]
    lines = [
        header,
        "",
        (
            f"| model | seeds | {a}: test acc | {b}: test acc | {a} mean (95% CI) | {b} mean (95% CI) | "
            f"{b} − {a}, mean (95% CI) | fit s {a} | fit s {b} |"
        ),
        "|---|---|---|---|---:|---:|---:|---|---|",
    ]
    for s in result["summary"]:
        lines.append(
            f"| {s['model']} | {', '.join(map(str, s['seeds']))} |"
            f" {', '.join(percent(v) for v in s['acc_a'])} | {', '.join(percent(v) for v in s['acc_b'])} |"
            f" {percent(s['mean_a'])} ({_ci(s['ci_a'])}) | {percent(s['mean_b'])} ({_ci(s['ci_b'])}) |"
            f" {100 * s['mean_diff']:+.2f} points ({_ci(s['ci_diff'], True)}) |"
            f" {', '.join(map(_seconds, s['fit_s_a']))} | {', '.join(map(_seconds, s['fit_s_b']))} |"
        )
    if result.get("unofficial_test_set"):
        lines += [
            "",
            "Not on the published test set (its size or md5 differs): "
            + ", ".join(result["unofficial_test_set"])
            + ".",
        ]
    lines += [
        "",
        (
            "Paired tests (McNemar's exact test per seed on the same test images, Holm-corrected over all of "
            "them):"
        ),
        "",
    ]
    lines += [f"- seed {t['seed']}: {t['reading']}" for t in result["tests"]] or ["- none could be run"]
    lines += [f"- not compared: {s}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def output_refusal(a: Path, b: Path, base: Path, overwrite: bool) -> str | None:
    """Why the A/B may not be written (or compared) as asked: the same folder twice, an output that is one of
    the inputs' files, or an earlier output without ``--overwrite``; None when it may."""
    if a.resolve() == b.resolve():
        return f"--a and --b are the same folder ({a}): an A/B needs two benchmarks. Fix: two results folders"
    outputs = [Path(f"{base}.json"), Path(f"{base}.md")]
    inputs = {(folder / name).resolve() for folder in (a, b) for name in ("benchmark.json", "benchmark.md")}
    for out in outputs:
        if out.resolve() in inputs:
            return f"--output {base} would write over {out}, an input of this A/B. Fix: another --output"
        if (reason := owned(out, (), None)) is not None:
            return f"--output {base} would write over {out}, which {reason}. Fix: another --output"
    existing = [str(out) for out in outputs if out.exists()]
    if existing and not overwrite:
        return (
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}. Fix: another"
            " --output, or --overwrite"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_bench.benchmark.experiments.ab", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--a", required=True, type=Path, help="results folder of the first arm")
    parser.add_argument("--b", required=True, type=Path, help="results folder of the second arm")
    parser.add_argument("--labels", nargs=2, default=("A", "B"), metavar=("LABEL_A", "LABEL_B"))
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the folder the benchmarks ran in (their run dirs are relative to it); default: here",
    )
    parser.add_argument("--output", type=Path, required=True, help="writes OUTPUT.md and OUTPUT.json")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier OUTPUT.md and OUTPUT.json"
    )
    args = parser.parse_args(argv)
    root = args.root or Path.cwd()
    base = str(args.output).removesuffix(".md").removesuffix(".json")  # a name with dots in it keeps them
    if (refusal := output_refusal(args.a, args.b, Path(base), args.overwrite)) is not None:
        print(f"ab: error: {refusal}", file=sys.stderr)
        return 2
    try:
        rows = rows_of(args.a, root), rows_of(args.b, root)
    except (OSError, ValueError, KeyError) as err:
        print(
            f"ab: error: {err}. Fix: give two benchmark results folders (each with benchmark.json)",
            file=sys.stderr,
        )
        return 1
    try:
        result = compare_benchmarks(*rows, *args.labels)
    except ValueError as err:
        print(f"ab: error: {err}", file=sys.stderr)
        return 2
    header = f"{args.labels[0]} ({args.a}) against {args.labels[1]} ({args.b})."
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(base + ".json"), result)
    text = markdown(result, header)
    Path(base + ".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
