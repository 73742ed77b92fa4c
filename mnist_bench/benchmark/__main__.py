"""`make benchmark` / `python -m mnist_bench.benchmark`: train the models, one process each, and write results/."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from mnist_bench.benchmark.aggregate import rows_from_run_dirs, summarize
from mnist_bench.benchmark.plots import write_plots
from mnist_bench.benchmark.runner import available_models, run_one
from mnist_bench.benchmark.table import csv_text, loss_note, markdown_table, print_rich_table, test_set_note
from mnist_bench.errors import first_line
from mnist_bench.precision import cpu_capability
from mnist_bench.provenance import cpu_name, git_sha, versions
from mnist_bench.utils import write_json_atomic, write_text_atomic

DEFAULT_SEED = 42


def environment() -> dict:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_name(),
        "cpu_cores": cores,
        "cpu_capability": cpu_capability(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "versions": versions(),
        "git_sha": git_sha(),
    }


def header(env: dict, wall_s: float | None, seed_unit_s: float | None) -> str:
    if env.get("gpus"):
        where = f"GPU: {', '.join(env['gpus'])}"
    else:
        where = f"CPU only: {env['cpu']} ({env.get('cpu_capability', 'unknown')}), {env['cpu_cores']} cores"
    v = env["versions"]
    text = (f"Ran on {where}; torch {v['torch']}, torchvision {v['torchvision']}, lightning {v['lightning']}; "
            f"git {env['git_sha'] or 'unknown'}; {env['date']}")
    if wall_s is not None:
        text += f"; benchmark wall time {wall_s / 60:.1f} min" + (f" ({wall_s / seed_unit_s:.1f} su)" if seed_unit_s
                                                                  else "")
    text += "."
    if seed_unit_s:
        text += (f" 1 su (seed unit) = {seed_unit_s:.1f} s, the seed notebook's 5-epoch CNN training on this "
                 "machine, measured in the same run.")
    return text


def measure_seed_unit(data_dir: str, extra: list[str]) -> float | None:
    """The seed notebook's 5-epoch CNN training time here, on the device the runs use: 1 su. None (with the
    reason) when it cannot run; the models' runs then say what is wrong with the data."""
    from mnist_bench.benchmark.overhead import SEED_EPOCHS, time_seed_pipeline

    on_cpu = any(arg.replace(" ", "=") == "--trainer.accelerator=cpu" for arg in extra)
    device = torch.device("cuda" if torch.cuda.is_available() and not on_cpu else "cpu")
    print(f"== seed unit: the seed notebook's pipeline, {SEED_EPOCHS} epochs on {device} ==", flush=True)
    try:
        return time_seed_pipeline(data_dir, SEED_EPOCHS, device)
    except (RuntimeError, OSError) as err:
        print(f"   -> no seed unit: {first_line(err)}", flush=True)
        return None


def with_seed_units(row: dict, seed_unit_s: float | None) -> dict:
    fit_s = row.get("time/fit_s")
    row["time/fit_su"] = round(fit_s / seed_unit_s, 3) if seed_unit_s and isinstance(fit_s, (int, float)) else None
    return row


def write_results(results: Path, env: dict, rows: list[dict], wall_s: float | None, seed_unit_s: float | None,
                  extra: list[str]) -> list[dict]:
    """benchmark.{json,csv,md} and the plots from per-run rows; returns the summary table."""
    summary = summarize(rows)
    head = header(env, wall_s, seed_unit_s)
    write_json_atomic(results / "benchmark.json", {"environment": env, "wall_s": round(wall_s, 1) if wall_s else None,
                                                   "seed_unit_s": round(seed_unit_s, 3) if seed_unit_s else None,
                                                   "extra_args": extra, "rows": rows, "summary": summary})
    write_text_atomic(results / "benchmark.csv", csv_text(rows))
    seeds = {r.get("seed") for r in rows if r.get("seed") is not None}
    seeds_note = f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    write_text_atomic(results / "benchmark.md", f"{head}\n\n{test_set_note(summary)}; {seeds_note}.\n\n"
                      f"{markdown_table(summary)}\n\n{loss_note(summary)}\n")
    write_plots(rows, summary, results, subtitle=head.split(";")[0])
    print_rich_table(summary, title="mnist-bench results")
    print(head)
    print(f"wrote {results}/benchmark.{{json,csv,md}} and plots")
    return summary


def commits_of(rows: list[dict]) -> str | None:
    """The rows' commit, or each commit with the models that ran it when the runs came from several."""
    models: dict[str, list[str]] = {}
    for row in rows:
        if row.get("git_sha"):
            models.setdefault(row["git_sha"], []).append(str(row.get("model")))
    if len(models) <= 1:
        return next(iter(models), None)
    return ", ".join(f"{sha} ({', '.join(dict.fromkeys(names))})" for sha, names in models.items())


def from_runs(run_dirs: list[Path], results: Path) -> int:
    """The results of finished (or failed) runs, without training: a run dir without metrics.json is a failed row."""
    rows = rows_from_run_dirs(run_dirs)
    if not rows:
        print("benchmark: error: no run dirs given (lightning_logs/<model>/version_<n>)", file=sys.stderr)
        return 2
    first = next((r for r in rows if r.get("status") == "ok"), rows[0])
    env = {"date": "from run dirs", "cpu": first.get("device"), "cpu_cores": "?", "cpu_capability": first.get("hardware"),
           "gpus": [first["device"].removeprefix("cuda: ")] if str(first.get("device")).startswith("cuda") else [],
           "versions": first.get("versions") or versions(), "git_sha": commits_of(rows)}
    write_results(results, env, rows, None, None, [])
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(prog="python -m mnist_bench.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="comma-separated config names, or 'all' (default)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model: 42, 43, ... (default 1)")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--config_dir", default="configs")
    parser.add_argument("--root", default=".", help="runs go to <root>/lightning_logs/<model>/version_<n>")
    parser.add_argument("--results", default="results")
    parser.add_argument("--timeout_s", type=float, default=None, help="kill a model's run after this long")
    parser.add_argument("--seed_unit", choices=["measure", "skip"], default="measure",
                        help="measure: time the seed notebook's pipeline first and report times in su too (default)")
    parser.add_argument("--from_runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="train nothing: build the results from these run dirs")
    args = parser.parse_args(argv)
    extra = [a for arg in extra for a in arg.split()]  # ARGS="--a=1 --b=2" arrives as one word
    if args.from_runs:
        return from_runs(args.from_runs, Path(args.results))

    config_dir = Path(args.config_dir)
    known = available_models(config_dir)
    models = known if args.models in ("all", "") else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in known]
    if unknown:
        print(f"benchmark: error: no config for {', '.join(unknown)} in {config_dir}/ (have: {', '.join(known)})",
              file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("benchmark: error: --seeds must be >= 1", file=sys.stderr)
        return 2

    results, root = Path(args.results), Path(args.root)
    env = environment()
    rows = []
    start = time.perf_counter()
    seed_unit_s = measure_seed_unit(args.data_dir, extra) if args.seed_unit == "measure" else None
    for model in models:
        for k in range(args.seeds):
            seed = DEFAULT_SEED + k
            print(f"== {model} (seed {seed}) == [{(time.perf_counter() - start) / 60:.1f} min into the benchmark]",
                  flush=True)
            row = run_one(model, seed, config_dir, args.data_dir, root, extra, results / "logs" / f"{model}-seed{seed}.log",
                          args.timeout_s)
            print(f"   -> {row['status']}" + (f": {row['error']}" if row.get("error") else
                                              f", test acc {100 * row['test/acc']:.2f}%"), flush=True)
            rows.append(with_seed_units(row, seed_unit_s))
    wall_s = time.perf_counter() - start
    write_results(results, env, rows, wall_s, seed_unit_s, extra)
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
