"""`make benchmark` / `python -m mnist_bench.benchmark`: train the models, one process each, and write
results/."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from mnist_bench.benchmark.jobs.estimate import Countdown, cut_short, estimate_runs, plan_lines
from mnist_bench.benchmark.jobs.plan import (
    Run,
    checked_against_run,
    done_before,
    job_environments,
    ledger_path,
    placement,
    read_record,
    record_done,
    run_key,
    run_list,
    usable_cpus,
    visible_gpus,
)
from mnist_bench.benchmark.jobs.recipes import DEFAULT_DATASET, available_models, missing_dataset, recipe_for
from mnist_bench.benchmark.jobs.runner import run_all, run_one
from mnist_bench.benchmark.report.aggregate import checked, rows_from_run_dirs, summarize, with_intervals
from mnist_bench.benchmark.report.comparison import compare_models, markdown_section
from mnist_bench.benchmark.report.row import failed_row
from mnist_bench.benchmark.report.table import (
    csv_text,
    loss_note,
    markdown_table,
    print_rich_table,
    test_set_note,
)
from mnist_bench.benchmark.seed_unit import SeedUnit, after_runs, choose, expected_seconds, runs_device
from mnist_bench.plots import save_figure
from mnist_bench.plots.benchmark import paired_tests_figure, write_plots
from mnist_bench.precision import cpu_capability
from mnist_bench.provenance import cpu_name, git_sha, versions
from mnist_bench.utils import read_json, write_json_atomic, write_text_atomic

INTERVALS = (
    "95% CI (test images): Wilson's interval for the accuracy from the number of test images; "
    "95% CI (seeds): Student's t interval for the mean over seeds (with two seeds or more)."
)


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


def header(env: dict, wall_s: float | None, seed_unit_s: float | None, unit_note: str | None = None) -> str:
    if env.get("gpus"):
        where = f"GPU: {', '.join(env['gpus'])}"
    else:
        where = f"CPU only: {env['cpu']} ({env.get('cpu_capability', 'unknown')}), {env['cpu_cores']} cores"
    v = env["versions"]
    text = (
        f"Ran on {where}; torch {v['torch']}, torchvision {v['torchvision']}, lightning {v['lightning']}; "
        f"git {env['git_sha'] or 'unknown'}; {env['date']}"
    )
    if wall_s is not None:
        text += f"; benchmark wall time {wall_s / 60:.1f} min" + (
            f" ({wall_s / seed_unit_s:.1f} su)" if seed_unit_s else ""
        )
    text += "."
    if seed_unit_s:
        text += (
            f" 1 su (seed unit) = {seed_unit_s:.1f} s, the seed notebook's 5-epoch CNN training on this "
            f"machine, {unit_note or 'measured by the benchmark that trained the runs'}."
        )
    return text


def with_seed_units(row: dict, seed_unit_s: float | None) -> dict:
    fit_s = row.get("time/fit_s")
    row["time/fit_su"] = (
        round(fit_s / seed_unit_s, 3) if seed_unit_s and isinstance(fit_s, (int, float)) else None
    )
    row["seed_unit_s"] = round(seed_unit_s, 3) if seed_unit_s else None  # the unit this run's su are in
    return row


def write_results(
    results: Path,
    env: dict,
    rows: list[dict],
    wall_s: float | None,
    seed_unit_s: float | None,
    extra: list[str],
    reused: int = 0,
    seed_unit: SeedUnit | None = None,
) -> list[dict]:
    """benchmark.{json,csv,md} and the plots from per-run rows (``reused`` of them from earlier benchmarks);
    returns the summary table."""
    rows = [with_intervals(checked(row)) for row in rows]
    summary = summarize(rows)
    comparison = compare_models(rows)
    head = header(env, wall_s, seed_unit_s, seed_unit.note() if seed_unit else None)
    units = {row.get("seed_unit_s") for row in rows if row.get("time/fit_su") is not None}
    if reused:
        head += (
            f" {reused} of the {len(rows)} runs were done by an earlier benchmark with the same config, seed,"
            " code and hardware and reused"
            + (
                "; their fit su are against the seed unit measured then (seed_unit_s "
                "of each run in benchmark.json)."
                if len(units) > 1
                else "."
            )
        )
    write_json_atomic(
        results / "benchmark.json",
        {
            "environment": env,
            "wall_s": round(wall_s, 1) if wall_s else None,
            "seed_unit_s": round(seed_unit_s, 3) if seed_unit_s else None,
            "seed_unit": seed_unit.as_dict() if seed_unit else None,
            "extra_args": extra,
            "rows": rows,
            "summary": summary,
            "paired_tests": comparison,
        },
    )
    write_text_atomic(results / "benchmark.csv", csv_text(rows))
    seeds = {r.get("seed") for r in rows if r.get("seed") is not None}
    seeds_note = f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    write_text_atomic(
        results / "benchmark.md",
        f"{head}\n\n{test_set_note(summary)}; {seeds_note}. {INTERVALS}\n\n"
        f"{markdown_table(summary)}\n\n{loss_note(summary)}\n\n{markdown_section(comparison)}",
    )
    write_plots(rows, summary, results, subtitle=head.split(";")[0])
    figure = paired_tests_figure(comparison)
    if figure is not None:
        save_figure(figure, results / "paired_tests.png")
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


def environment_of(rows: list[dict], date: str) -> dict:
    """The environment header for a table built from finished runs (their first ok row's device and
    versions)."""
    first = next((r for r in rows if r.get("status") == "ok"), rows[0])
    return {
        "date": date,
        "cpu": first.get("device"),
        "cpu_cores": "?",
        "cpu_capability": first.get("hardware"),
        "gpus": (
            [first["device"].removeprefix("cuda: ")] if str(first.get("device")).startswith("cuda") else []
        ),
        "versions": first.get("versions") or versions(),
        "git_sha": commits_of(rows),
    }


def from_runs(run_dirs: list[Path], results: Path) -> int:
    """The results of finished (or failed) runs, without training: a run dir without metrics.json is a failed
    row."""
    rows = rows_from_run_dirs(run_dirs)
    if not rows:
        print("benchmark: error: no run dirs given (lightning_logs/<model>/version_<n>)", file=sys.stderr)
        return 2
    write_results(results, environment_of(rows, "from run dirs"), rows, None, None, [])
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m mnist_bench.benchmark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", default="all", help="comma-separated config names, or 'all' (default)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model: 42, 43, ... (default 1)")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument(
        "--config_dir", default="configs", help="the models' recipes: <config_dir>/<model>.yaml"
    )
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=(
            "train on this dataset: each recipe with <config_dir>/data/<dataset>.yaml after it, and "
            "<config_dir>/<dataset>/<model>.yaml where a model has one (default mnist)"
        ),
    )
    parser.add_argument("--root", default=".", help="runs go to <root>/lightning_logs/<model>/version_<n>")
    parser.add_argument(
        "--results",
        default=None,
        help="results folder (default: results/, or results/<dataset>/ for another dataset than MNIST)",
    )
    parser.add_argument("--timeout_s", type=float, default=None, help="kill a model's run after this long")
    parser.add_argument(
        "--seed_unit",
        choices=["auto", "measure", "before_after", "skip"],
        default="auto",
        help=(
            "auto: this machine's cached seed unit, measured first when there is none and the runs "
            "are not cut short (default); measure: time it again now; before_after: time it before "
            "and after the runs (the table states both); skip: times in seconds only"
        ),
    )
    parser.add_argument(
        "--estimate",
        choices=["auto", "records", "off"],
        default="auto",
        help=(
            "each run's expected time, said before the runs: from finished runs on this machine, "
            "else a short probe (auto, default); from finished runs only (records); none (off)"
        ),
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=(
            "runs at once, each on its own GPU or its own CPU cores (default: one per visible GPU, "
            "1 without a GPU)"
        ),
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train every run again, even those done before with the same config, seed and code",
    )
    parser.add_argument("--list", action="store_true", help="print the runs (index, model, seed) and exit")
    parser.add_argument(
        "--only",
        type=int,
        metavar="INDEX",
        help="train only the run with this index in --list (a SLURM array task); no table",
    )
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="train nothing: build the table from the runs recorded in <results>/runs (after --only)",
    )
    parser.add_argument(
        "--from_runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="train nothing: build the results from these run dirs",
    )
    args = parser.parse_args(argv)
    extra = [a for arg in extra for a in arg.split()]  # ARGS="--a=1 --b=2" arrives as one word
    if args.results is None:
        args.results = "results" if args.dataset == DEFAULT_DATASET else f"results/{args.dataset}"
    blocked = next(
        (p for p in [Path(args.results), *Path(args.results).parents] if p.exists() and not p.is_dir()), None
    )
    if blocked is not None:
        print(
            f"benchmark: error: --results {args.results}: {blocked} is a file, not a folder; name another"
            " --results",
            file=sys.stderr,
        )
        return 2
    if args.from_runs:
        return from_runs(args.from_runs, Path(args.results))

    config_dir = Path(args.config_dir)
    known = available_models(config_dir)
    models = known if args.models in ("all", "") else [m.strip() for m in args.models.split(",") if m.strip()]
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        print(f"benchmark: error: --models names {', '.join(twice)} more than once", file=sys.stderr)
        return 2
    unknown = [m for m in models if m not in known]
    if unknown:
        print(
            f"benchmark: error: no config for {', '.join(unknown)} in {config_dir}/ (have:"
            f" {', '.join(known)})",
            file=sys.stderr,
        )
        return 2
    if args.seeds < 1:
        print("benchmark: error: --seeds must be >= 1", file=sys.stderr)
        return 2
    if (missing := missing_dataset(config_dir, args.dataset)) is not None:
        print(f"benchmark: error: {missing}", file=sys.stderr)
        return 2
    recipes = {model: recipe_for(model, config_dir, args.dataset) for model in models}
    runs = run_list(models, args.seeds)
    if args.list:
        for index, run in enumerate(runs):
            print(index, run.model, run.seed)
        return 0
    if args.only is not None and not 0 <= args.only < len(runs):
        print(
            f"benchmark: error: --only {args.only}: the runs are 0..{len(runs) - 1} (see --list)",
            file=sys.stderr,
        )
        return 2
    selected = [runs[args.only]] if args.only is not None else runs
    gpus = visible_gpus()
    # one per visible GPU by default; never more jobs than runs (a lone run, e.g. an array task, keeps the
    # machine)
    jobs = min(args.jobs if args.jobs is not None else max(1, len(gpus)), len(selected))
    try:
        environments = job_environments(jobs, gpus, usable_cpus())
    except ValueError as err:
        print(f"benchmark: error: --jobs {jobs}: {err}", file=sys.stderr)
        return 2

    results, root = Path(args.results), Path(args.root)
    keys = {run: run_key(run, recipes[run.model], args.data_dir, extra) for run in runs}
    if args.aggregate:
        return aggregate(runs, keys, results)
    env = environment()
    where = placement(env, jobs)
    reused = (
        {}
        if args.force
        else {run: e for run in selected if (e := done_before(results, run, keys[run], where))}
    )
    todo = [run for run in selected if run not in reused]
    for run, entry in reused.items():
        if entry["row"].get("status") != "ok":  # a record that disagrees with its run: reported, not reused
            print(
                f"== {run.model} (seed {run.seed}) == its record is refused: {entry['row'].get('error')}",
                flush=True,
            )
            continue
        print(
            f"== {run.model} (seed {run.seed}) == done before with the same config, seed, code and hardware: "
            f"{entry['row'].get('run_dir')} (--force to train it again)",
            flush=True,
        )
    # an array task never measures the seed unit (it takes the cached one) nor probes
    short = cut_short(extra, [recipes[run.model] for run in todo])
    unit_mode = (
        "skip"
        if not todo
        else args.seed_unit
        if args.only is None
        else ("skip" if args.seed_unit == "skip" else "cached")
    )
    device = "cuda" if runs_device(extra).type == "cuda" else f"cpu: {cpu_name()} ("
    estimates = estimate_runs(
        todo,
        recipes,
        args.data_dir,
        extra,
        results,
        where,
        device,
        environments[0],
        args.estimate if args.only is None or args.estimate == "off" else "records",
    )
    unit_s, unit_times = expected_seconds(unit_mode, extra, short)
    if todo:
        print("\n".join(plan_lines(estimates, jobs, unit_s, unit_times)), flush=True)
    seed_unit = choose(unit_mode, args.data_dir, extra, short)
    seed_unit_s = seed_unit.seconds if seed_unit else None
    if seed_unit_s is None and reused and args.only is None:
        seed_unit_s = next(iter(reused.values()))["row"].get(
            "seed_unit_s"
        )  # checked against this machine's cache
    countdown = Countdown(estimates, jobs, after_s=(unit_s or 0.0) if unit_mode == "before_after" else 0.0)
    start = time.perf_counter()  # the runs' wall time: the seed unit and the probes are not in it

    def train(run: Run, env: dict[str, str], label: str, on_run_dir) -> dict:
        print(
            f"== {run.model} (seed {run.seed}) == [{(time.perf_counter() - start) / 60:.1f} min into the"
            f" benchmark; {countdown.start(run)}]"
            + (f" {' '.join(f'{k}={v}' for k, v in env.items())}" if env else ""),
            flush=True,
        )
        run_start = time.perf_counter()
        row = run_one(
            recipes[run.model],
            run.seed,
            args.data_dir,
            root,
            extra,
            results / "logs" / f"{run.name}.log",
            args.timeout_s,
            env=env,
            label=label,
            on_run_dir=on_run_dir,
        )
        row["time/run_s"] = round(time.perf_counter() - run_start, 1)  # the run's process, start-up included
        print(
            f"   {label}-> {row['status']}"
            + (f": {row['error']}" if row.get("error") else f", test acc {100 * row['test/acc']:.2f}%")
            + f" ({countdown.finish(run)})",
            flush=True,
        )
        return with_seed_units(row, seed_unit_s)

    try:
        trained = run_all(
            todo,
            train,
            environments,
            done=lambda run, row: record_done(results, run, keys[run], where, row, seed_unit_s),
        )
    except KeyboardInterrupt:
        print(
            "benchmark: interrupted: the runs going on were stopped; the finished ones are recorded, and the"
            " same command continues with the rest",
            file=sys.stderr,
        )
        return 130
    wall_s = time.perf_counter() - start
    if args.only is not None:
        row = trained.get(selected[0]) or reused[selected[0]]["row"]
        return 0 if row.get("status") == "ok" else 1
    if seed_unit is not None and seed_unit.how == "before_after":
        seed_unit = after_runs(seed_unit, args.data_dir, extra)
        seed_unit_s = seed_unit.seconds
        for run, row in trained.items():  # their su against the unit of both measurements
            record_done(results, run, keys[run], where, with_seed_units(row, seed_unit_s), seed_unit_s)
    rows = [trained[run] if run in trained else reused[run]["row"] for run in runs]
    env["git_sha"] = (
        commits_of(rows) or env["git_sha"]
    )  # the commits the rows ran at (reused rows keep theirs)
    write_results(
        results,
        env,
        rows,
        wall_s if todo else None,
        seed_unit_s,
        extra,
        reused=len(reused),
        seed_unit=seed_unit,
    )
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def recorded_row(record: Path, run: Run, key: str, row: dict) -> dict:
    """A recorded ok row checked against its run's own metrics.json; any other row is a failed row that keeps
    only its error (a figure beside a status that is not "ok" is never reported)."""
    if row.get("status") != "ok":
        error = row.get("error") if row.get("status") == "failed" else None
        if not isinstance(error, str) or not error:
            error = f"{record}: its status {row.get('status')!r} is neither 'ok' nor 'failed' with an error"
        return failed_row(run.model, run.seed, error)
    metrics_file = Path(str(row.get("run_dir") or "")) / "metrics.json"
    try:
        metrics = read_json(metrics_file)
    except (OSError, ValueError) as err:
        return failed_row(run.model, run.seed, f"{record}: its run's {metrics_file} is unreadable ({err})")
    if not isinstance(metrics, dict):
        return failed_row(run.model, run.seed, f"{record}: its run's {metrics_file} is not a metrics record")
    return checked_against_run(record, run, key, row, metrics)


def aggregate(runs: list[Run], keys: dict[Run, str], results: Path) -> int:
    """The table from the runs recorded in ``<results>/runs`` (SLURM array tasks); a run not recorded with the
    current key is a failed row that says so."""
    rows, seed_unit_s = [], None
    for index, run in enumerate(runs):
        path = ledger_path(results, run)
        entry = read_record(results, run)
        if entry is None:
            why = "is missing: the task did not finish" if not path.exists() else "is damaged"
            rows.append(failed_row(run.model, run.seed, f"run {index} has no result ({path} {why})"))
        elif entry["key"] != keys[run]:
            rows.append(
                failed_row(
                    run.model, run.seed, f"run {index}'s result in {path} is for another config, code or data"
                )
            )
        else:
            rows.append(recorded_row(path, run, keys[run], entry["row"]))
            seed_unit_s = seed_unit_s or rows[-1].get("seed_unit_s")  # checked against this machine's cache
    write_results(results, environment_of(rows, "from recorded runs"), rows, None, seed_unit_s, [])
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
