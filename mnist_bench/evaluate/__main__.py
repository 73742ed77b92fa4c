"""``make robustness`` / ``python -m mnist_bench.evaluate``: the benchmark's trained runs (or the run dirs
given) corrupted, attacked, calibrated and costed, and ``robustness.md``, ``robustness.json`` and the pictures
written next to the benchmark's results."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mnist_bench.errors import UserFacingError, first_line
from mnist_bench.evaluate.attacks import AttackSettings
from mnist_bench.evaluate.cost import CostSettings
from mnist_bench.evaluate.run import Settings, TestImages, evaluate_run, load_arrays
from mnist_bench.utils import read_json, write_json_atomic, write_text_atomic

SAMPLE_COLUMNS = 8


def run_dirs_of(results: Path) -> list[Path]:
    """The run dir of each model's first seed in ``<results>/benchmark.json`` (ok rows only)."""
    path = results / "benchmark.json"
    if not path.is_file():
        raise UserFacingError(f"{path} not found. Fix: run make benchmark first (or pass --runs RUN_DIR ...)")
    try:
        rows = read_json(path)
    except (OSError, ValueError) as err:
        raise UserFacingError(f"{path} does not read ({first_line(err)})") from None
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    chosen: dict[str, Path] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("status") == "ok" and row.get("run_dir"):
            chosen.setdefault(str(row.get("model")), Path(row["run_dir"]))
    if not chosen:
        raise UserFacingError(f"{path} holds no finished run with a run dir. Fix: run make benchmark first")
    return [chosen[m] for m in sorted(chosen)]


def seed_unit_seconds() -> float | None:
    from mnist_bench.benchmark.seed_unit import cached, machine

    measured = cached(machine(torch.device("cpu")))
    return float(measured[-1]["seconds"]) if measured else None


def header(records: list[dict[str, Any]], wall_s: float, reused: int) -> str:
    from mnist_bench.precision import cpu_capability
    from mnist_bench.provenance import cpu_name, git_sha, versions

    v = versions()
    unit = seed_unit_seconds()
    spent = sum(r["timing"]["total_s"] for r in records)  # as measured when each run was evaluated
    took = (
        f"{spent / 60:.1f} min to evaluate the {len(records)} runs"
        + (
            f" ({spent / unit:.2f} su; 1 su = {unit:.1f} s, this machine's latest cached seed unit)"
            if unit
            else ""
        )
        + (f"; this command {wall_s:.0f} s, {reused} of {len(records)} evaluations reused" if reused else "")
    )
    runs = ", ".join(
        f"{r['model']} ({r['run_dir']}, trained at git {str(r.get('git_sha') or 'unknown')[:7]}, test "
        f"acc {100 * (r['test_acc'] or 0):.2f}%)"
        for r in records
    )
    return (
        f"# Robustness, calibration and cost\n\nRan on CPU: {cpu_name()} ({cpu_capability()}), "
        f"{torch.get_num_threads()} threads; torch {v['torch']}; git {git_sha() or 'unknown'}; "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; {took}.\n\nRuns: {runs}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_bench.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--results",
        default="results",
        help="the benchmark's results folder (its benchmark.json names the runs; the report goes there)",
    )
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="evaluate these run dirs instead")
    parser.add_argument("--output", help="where robustness.md goes (default: --results)")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--corruption_images", type=int, default=Settings.corruption_images)
    parser.add_argument("--attack_images", type=int, default=Settings.attack_images)
    parser.add_argument("--pgd_steps", type=int, default=AttackSettings.pgd_steps)
    parser.add_argument("--latency_calls", type=int, default=CostSettings.latency_calls)
    parser.add_argument(
        "--no_onnx", action="store_true", help="skip the ONNX export and ONNX Runtime latency"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="evaluate again even where a finished evaluation "
        "with the same settings is stored in the run dir",
    )
    args = parser.parse_args(argv)
    for name in ("corruption_images", "attack_images", "pgd_steps", "latency_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    settings = Settings(
        corruption_images=args.corruption_images,
        attack_images=min(args.attack_images, args.corruption_images),
        attacks=AttackSettings(pgd_steps=args.pgd_steps),
        cost=CostSettings(latency_calls=args.latency_calls, onnx=not args.no_onnx),
    )
    results = Path(args.results)
    output = Path(args.output) if args.output else results
    if output.exists() and not output.is_dir():
        print(f"evaluate: error: --output {output} is a file, not a folder", file=sys.stderr)
        return 2
    started = time.perf_counter()
    images: dict[str, TestImages] = {}

    def test_images(dataset: str) -> TestImages:
        if dataset not in images:
            images[dataset] = TestImages(args.data_dir, dataset, settings)
        return images[dataset]

    try:
        runs = [Path(r) for r in args.runs] if args.runs else run_dirs_of(results)
        print(
            f"evaluate: {len(runs)} runs; {settings.corruption_images:,} test images per corruption, "
            f"{settings.attack_images:,} attacked",
            flush=True,
        )
        records = [
            evaluate_run(
                run,
                args.data_dir,
                settings,
                test_images,
                log=lambda line: print(line, flush=True),
                force=args.force,
            )
            for run in runs
        ]
        reused = sum(bool(r.get("reused")) for r in records)
        datasets = {r["dataset"] for r in records}
        if len(datasets) > 1:
            raise UserFacingError(
                f"the runs are on several datasets ({', '.join(sorted(map(str, datasets)))}). "
                "Fix: evaluate one dataset's runs at a time"
            )
        correct = [load_arrays(r["run_dir"]) for r in records]
    except UserFacingError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 1
    from mnist_bench.evaluate.report import build
    from mnist_bench.plots.robustness import write_figures

    wall = time.perf_counter() - started
    text, data = build(records, correct, header(records, wall, reused))
    output.mkdir(parents=True, exist_ok=True)
    samples = None
    if images:
        test = next(iter(images.values()))
        pick = slice(0, SAMPLE_COLUMNS)
        from mnist_bench.evaluate.corruptions import CORRUPTIONS

        samples = (
            test.pixels[test.index][pick],
            {n: test.corrupted(n)[pick] for n in CORRUPTIONS},
            test.labels[test.index][pick],
        )
    figures = write_figures(records, output / "robustness", records[0]["dataset"] or "", samples)
    text += "\n" + "\n".join(f"![{p.stem}](robustness/{p.name})" for p in figures) + "\n"
    write_text_atomic(output / "robustness.md", text)
    write_json_atomic(output / "robustness.json", json.loads(json.dumps(data, default=float)))
    print(
        f"evaluate: wrote {output / 'robustness.md'} and {len(figures)} pictures in {output / 'robustness'} "
        f"({wall:.0f} s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
