"""``mnist-bench sweep``: an Optuna search over any config keys, each trial an ordinary ``mnist-bench fit``
run.

    mnist-bench sweep --config configs/vit.yaml --space sweeps/vit.yaml --trials 40
    mnist-bench sweep --config configs/vit.yaml --space sweeps/vit.yaml --trials 40 --jobs 2  # 2 workers here
    mnist-bench sweep ... --study vit_fashion -- --config configs/data/fashion_mnist.yaml     # Fashion-MNIST
    mnist-bench sweep ... --storage postgresql://user:pw@db/optuna --study vit                # every machine

The study lives in ``--storage`` (by default a SQLite file in the results folder); rerunning the same command
continues it: finished trials stay, the trial a killed worker left is run again. Every worker, here or
elsewhere, stops when the study holds ``--trials`` finished (complete or pruned) or running trials. Results
(table, best config, plots, TensorBoard HPARAMS) go to ``results/sweeps/<study>/``; the trials' run folders to
``lightning_logs/sweeps/<study>/``. Arguments after ``--`` go to every trial's ``fit``.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mnist_bench.allowlist import ALLOW_IMPORTS_ENV, ALLOW_IMPORTS_FLAG, allowed_imports, allowed_packages
from mnist_bench.errors import ConfigError, UserFacingError, one_line
from mnist_bench.sweep.space import load_space

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    fit_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, fit_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="mnist-bench sweep",
        description=__doc__.split("\n\n")[0],
        epilog="Search spaces: docs/sweeps.md. Arguments after -- go to every trial's fit.",
    )
    parser.add_argument(
        "--config", required=True, help="the recipe every trial starts from (configs/<model>.yaml)"
    )
    parser.add_argument("--space", required=True, help="the search space (sweeps/<model>.yaml)")
    parser.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    parser.add_argument(
        "--study",
        default=None,
        help="study name (default: the config's name, e.g. vit); the same "
        "name in the same storage continues the study",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by every worker (default: sqlite:///<results>/optuna.db)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="workers on this machine, each on its own GPU or CPU cores (default 1)",
    )
    parser.add_argument(
        "--sampler", default=None, help="overrides the space's sampler: tpe, random, cmaes, qmc, gp, grid"
    )
    parser.add_argument(
        "--pruner",
        default=None,
        help="overrides the space's pruner: median, percentile, hyperband, "
        "successive_halving, threshold, none",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (worker k uses seed + k)")
    parser.add_argument("--results", default=None, help="results folder (default: results/sweeps/<study>)")
    parser.add_argument(
        "--runs_dir", default=None, help="where the trials' runs go (default: lightning_logs/sweeps/<study>)"
    )
    parser.add_argument("--timeout_s", type=float, default=None, help="a trial running longer fails")
    parser.add_argument(
        "--heartbeat_s",
        type=int,
        default=None,
        help="seconds between a running trial's heartbeats "
        "(default 30; another machine's trial counts as "
        "dead after 2 missed)",
    )
    parser.add_argument("--data_dir", default=None, help="passed to every trial as --data.data_dir")
    parser.add_argument(
        ALLOW_IMPORTS_FLAG,
        action="append",
        default=[],
        metavar="PKG",
        help="your own package that the trials' configs may import (comma-separated, repeatable; "
        f"also ${ALLOW_IMPORTS_ENV}); never taken from the space",
    )
    return parser.parse_args(argv), fit_args


def main(argv: list[str] | None = None) -> int:
    from mnist_bench.sweep.optuna_parts import scrub

    args, fit_args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return sweep(args, fit_args)
    except ConfigError as err:
        print(f"mnist-bench sweep: config error: {scrub(one_line(err), args.storage)}", file=sys.stderr)
        return 2
    except UserFacingError as err:
        print(f"mnist-bench sweep: {scrub(one_line(err), args.storage)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mnist-bench sweep: stopped; rerun the same command to continue the study", file=sys.stderr)
        return 130


def sweep(args: argparse.Namespace, fit_args: list[str]) -> int:
    from mnist_bench.benchmark.jobs.plan import job_environments, usable_cpus, visible_gpus
    from mnist_bench.benchmark.jobs.runner import stop_all_runs
    from mnist_bench.sweep import optuna_parts as parts
    from mnist_bench.sweep import study as studies
    from mnist_bench.sweep.report import write_report
    from mnist_bench.sweep.study import TrialRun

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(f"--config {config}: no such file. Fix: a model config, e.g. configs/cnn.yaml")
    if args.trials < 1 or args.jobs < 1:
        raise ConfigError("--trials and --jobs must be at least 1")
    if (args.heartbeat_s is not None and args.heartbeat_s < 1) or (
        args.timeout_s is not None and args.timeout_s <= 0
    ):
        raise ConfigError("--heartbeat_s must be at least 1 and --timeout_s above 0")
    # the trials' allowlist comes from this command line (and the environment) alone, never from the space
    fit_args, given = allowed_imports(fit_args)
    packages = allowed_packages([*args.allow_imports, *given])
    space = load_space(args.space, packages)
    name = args.study or config.stem
    if not STUDY_NAME.match(name):
        raise ConfigError(f"--study {name!r}: letters, digits, '_', '.', '-' only")
    results = Path(args.results or Path("results") / "sweeps" / name)
    runs_dir = Path(args.runs_dir or Path("lightning_logs") / "sweeps" / name).resolve()
    for option, folder in (("--results", results), ("--runs_dir", runs_dir)):
        clash = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if clash is not None:
            raise ConfigError(f"{option} {folder}: {clash} is a file, not a folder. Fix: give a folder")
    results.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{(results / 'optuna.db').resolve()}"
    parts.quiet_optuna()
    storage = parts.make_storage(url, args.heartbeat_s or parts.HEARTBEAT_S)
    environments = job_environments(args.jobs, visible_gpus(), usable_cpus())
    extra = [
        *fit_args,
        *([f"--data.data_dir={args.data_dir}"] if args.data_dir else []),
        *([f"{ALLOW_IMPORTS_FLAG}={','.join(packages)}"] if packages else []),
    ]
    recipe = studies.recipe(config, extra, space)
    stopping = threading.Event()
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            print(f"  {line}", flush=True)

    def worker(k: int) -> None:
        sampler = parts.make_sampler(space, args.sampler, args.seed + k)
        study = studies.open_study(
            name, storage, space, sampler, parts.make_pruner(pruner, space.source), recipe
        )
        how = TrialRun(
            str(config), extra, runs_dir, results / "logs", environments[k], pruner, args.timeout_s
        )
        studies.work(study, space, args.trials, how, url, log, stopping)

    pruner = parts.pruner_spec(space, args.pruner)
    first = studies.open_study(
        name,
        storage,
        space,
        parts.make_sampler(space, args.sampler, args.seed),
        parts.make_pruner(pruner, space.source),
        recipe,
    )
    before = studies.counts(first)
    print(
        f"sweep {name!r}: {args.trials} trials of {config} over {len(space.params)} keys, {space.direction} "
        f"{space.objective}; storage {parts.redact(url)}; {before['complete'] + before['pruned']} finished "
        f"before; {args.jobs} worker(s) here",
        flush=True,
    )
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(worker, k) for k in range(args.jobs)]
        try:
            for future in futures:
                try:
                    future.result()
                except (ConfigError, UserFacingError) as err:
                    stopping.set()
                    errors.append(err)
        except (
            KeyboardInterrupt
        ):  # Ctrl-C reaches this thread only: stop the workers and the runs they started
            stopping.set()
            stop_all_runs()
            raise
    header = (
        f"Sweep {name!r} of {config} over {args.space}: {space.direction} {space.objective}, sampler "
        f"{args.sampler or space.sampler['name']}, pruner {args.pruner or space.pruner['name']}, "
        f"{args.trials} trials requested; storage {parts.redact(url)}."
    )
    summary = write_report(first, results, header)
    states = ", ".join(f"{v} {k}" for k, v in summary["states"].items() if v)
    print(f"sweep {name!r}: {states}; table {results / 'sweep.md'}")
    if summary["best"] is not None:
        best = summary["best"]
        print(f"  best: trial {best['trial']}, {space.objective} {best['value']:.4f}, {best['params']}")
        print(f"  train it: mnist-bench fit --config {results / 'best.yaml'}")
    if errors:
        raise errors[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
