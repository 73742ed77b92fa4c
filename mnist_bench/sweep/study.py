"""A sweep's study and its workers: Optuna's storage, sampler and pruner, and the loop that runs trials as
ordinary ``mnist-bench fit`` processes.

Every worker (``--jobs`` of them in one process, and any number on other machines) asks the shared study for a
trial, runs it, and tells the study how it ended, until the study holds the requested number of finished
(complete or pruned) and running trials. A worker that was killed leaves its trial running in the storage: a
worker on the same machine finds its process gone and fails the trial at once, others after the storage's
heartbeat grace period; either way Optuna's ``RetryHeartbeatStaleTrialCallback`` puts the same parameters back
in the queue, so a rerun of the sweep continues where it stopped.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_bench.cli.rundirs import RUN_DIR_LINE
from mnist_bench.config_files import files_digest, included_files, named_files
from mnist_bench.errors import ConfigError, UserFacingError
from mnist_bench.sweep.optuna_parts import HEARTBEAT_S
from mnist_bench.sweep.protocol import PRUNED_EXIT, trial_environment
from mnist_bench.sweep.space import SearchSpace, override_args
from mnist_bench.utils import process_alive, read_json

CONFIG_EXIT = 2  # mnist-bench's exit code for a config error: the base config is wrong, no trial can run
FAILED_RUN = "failed_run"  # a trial's user attribute: its run failed (a killed worker's trial does not count)


def recipe(config: Path, fit_args: list[str], space: SearchSpace) -> dict[str, Any]:
    """What makes trials comparable: the config file's text (by digest), the arguments after ``--`` and the
    searched keys. The data folder and the import allowlist may differ between machines and are left out."""
    args, skip = [], False
    for arg in fit_args:
        if skip:
            skip = False
        elif arg in ("--data.data_dir", "--allow-imports"):
            skip = True
        elif not arg.startswith(("--data.data_dir=", "--allow-imports=")):
            args.append(arg)
    params = json.loads(
        json.dumps(
            [{k: v for k, v in vars(p).items() if v not in (None, False, ())} for p in space.params],
            default=str,
        )
    )
    # a file the trial's parser also reads (a section given as a file, --config in the arguments) counts by
    # content
    args = [
        f"{arg} (sha256 {digest})" if (digest := files_digest(named_files(arg, Path.cwd()))) else arg
        for arg in args
    ]
    return {
        "config": str(config),
        "config_sha256": files_digest([config, *included_files(config)]),
        "fit_args": args,
        "params": params,
    }


def _check_recipe(study: Any, name: str, wanted: dict[str, Any]) -> None:
    known = study.user_attrs.get("recipe")
    if known is None:
        study.set_user_attr("recipe", wanted)  # a new study (or one made before recipes were kept)
        return
    if known.get("config_sha256") != wanted["config_sha256"]:
        differs = (
            f"the config {known.get('config')} (as it was then) and this command gives {wanted['config']}"
        )
    elif known.get("fit_args") != wanted["fit_args"]:
        differs = (
            f"the arguments after -- {' '.join(known.get('fit_args') or []) or '(none)'} and this command "
            f"gives {' '.join(wanted['fit_args']) or '(none)'}"
        )
    elif known.get("params") != wanted["params"]:
        keys = [p["key"] for p in known.get("params") or []]
        differs = f"another search space (keys {', '.join(keys)}, or their ranges)"
    else:
        return
    raise ConfigError(
        f"study {name!r} in this storage was run with {differs}: its trials would not be comparable. "
        "Fix: another --study name, or the study's own config, arguments and space"
    )


def open_study(
    name: str,
    storage: Any,
    space: SearchSpace,
    sampler: Any,
    pruner: Any,
    wanted: dict[str, Any] | None = None,
) -> Any:
    """Creates the study or joins it (the same name: resume, or another worker); its direction, objective and
    recipe (``wanted``, from :func:`recipe`) must agree."""
    import optuna

    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=space.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != space.direction:
        raise ConfigError(
            f"study {name!r} in this storage {study.direction.name.lower()}s its objective and the "
            f"space says {space.direction}. Fix: another --study name"
        )
    known = study.user_attrs.get("objective")
    if known is None:
        study.set_user_attr("objective", space.objective)
    elif known != space.objective:
        raise ConfigError(
            f"study {name!r} optimizes {known} and the space says {space.objective}. Fix: another "
            "--study name"
        )
    if wanted is not None:
        _check_recipe(study, name, wanted)
    return study


def fail_dead_trials(study: Any) -> list[int]:
    """Trials left running by workers that are gone: on this machine (their process is dead) at once,
    elsewhere once their heartbeat is older than the grace period. Their parameters go back in the queue (up
    to MAX_RETRY times). Returns the numbers of the trials failed here."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") == host and not process_alive(int(worker.get("pid", 0))):
            try:  # another worker may fail it first
                storage.set_trial_user_attr(trial._trial_id, "error", "its worker was killed")
                if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                    storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial._trial_id))
                    failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    optuna.storages.fail_stale_trials(study)
    return failed


def tell(study: Any, trial: Any, value: float | None = None, state: Any = None) -> None:
    """``study.tell``; the grid sampler's "every point is taken" (its ``study.stop()``, meant for
    ``study.optimize``) comes after the trial is stored and ends nothing here: the worker's count does."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def ahead_of(study: Any, number: int) -> int:
    """Finished trials, and running ones numbered before ``number``: what the trial ``number`` comes after."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in done or (t.state == TrialState.RUNNING and t.number < number)
    )


def counts(study: Any) -> dict[str, int]:
    """Trials by state, and ``failed_run``: the failed trials whose run itself failed (not those of a killed
    or stale worker, nor a surplus trial that gave way)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    found = {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}
    found["failed_run"] = sum(
        1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(FAILED_RUN)
    )
    return found


@dataclass
class TrialRun:
    """How one trial is run: the command's base, where runs go, and the worker's environment."""

    config: str
    fit_args: list[str]
    runs_dir: Path
    logs_dir: Path
    env: dict[str, str]
    pruner: dict[str, Any]
    timeout_s: float | None = None


def objective_value(metrics: dict[str, Any], objective: str) -> float | None:
    """The objective from a finished run's metrics.json: its last epoch's value (history), else a top-level
    key."""
    history = metrics.get("history") or []
    value = history[-1].get(objective) if history else None
    if value is None:
        value = metrics.get(objective)
    return None if value is None else float(value)


def run_trial(
    study: Any, trial: Any, space: SearchSpace, how: TrialRun, storage_url: str, log: Callable[[str], None]
) -> tuple[str, str | None]:
    """Runs one trial as ``mnist-bench fit``, tells the study how it ended. Returns (state, error)."""
    from optuna.trial import TrialState

    from mnist_bench.benchmark.jobs.runner import run_logged

    values = space.suggest(trial)
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    cmd = [
        sys.executable,
        "-m",
        "mnist_bench",
        "fit",
        "--config",
        how.config,
        *how.fit_args,
        *override_args(values),
        f"--trainer.default_root_dir={how.runs_dir / f'trial_{trial.number}'}",
    ]  # a folder each: workers in parallel
    env = {
        **how.env,
        **trial_environment(storage_url, study.study_name, trial._trial_id, space.objective, how.pruner),
    }
    stop = threading.Event()

    def beat() -> None:  # the trial is alive as long as this worker is
        while not stop.wait(study._storage.get_heartbeat_interval() or HEARTBEAT_S):
            study._storage.record_heartbeat(trial._trial_id)

    study._storage.record_heartbeat(trial._trial_id)
    heart = threading.Thread(target=beat, daemon=True)
    heart.start()
    try:
        code, lines, kept = run_logged(
            cmd,
            how.logs_dir / f"trial_{trial.number}.log",
            timeout_s=how.timeout_s,
            keep=lambda line: line.startswith(RUN_DIR_LINE),
            env=env,
        )
    finally:
        stop.set()
    run_dir = kept[-1][len(RUN_DIR_LINE) :].strip() if kept else None
    if run_dir:
        trial.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    metrics = _read_metrics(run_dir)
    if metrics:
        trial.set_user_attr("fit_s", metrics.get("time/fit_s"))
        trial.set_user_attr("epochs", metrics.get("epochs"))
        config_file = Path(run_dir) / "config.yaml"
        if config_file.is_file():
            trial.set_user_attr("config_yaml", config_file.read_text())
    if code == PRUNED_EXIT:
        tell(study, trial, state=TrialState.PRUNED)
        return "pruned", None
    value = objective_value(metrics, space.objective) if code == 0 and metrics else None
    if value is not None:
        tell(study, trial, value)
        log(f"trial {trial.number}: {space.objective} {value:.4f}  {' '.join(override_args(values))}")
        return "complete", None
    error = next((line for line in reversed(lines) if line.startswith("mnist-bench:")), None) or (
        lines[-1] if lines else "no output"
    )
    if code is None:
        error = f"ran past --timeout_s ({how.timeout_s:.0f} s)"
    elif code == 0:
        error = f"the run has no {space.objective} in its metrics.json"
    trial.set_user_attr("error", error[:500])
    trial.set_user_attr(FAILED_RUN, True)
    tell(study, trial, state=TrialState.FAIL)
    return ("config" if code == CONFIG_EXIT else "failed"), error


def _read_metrics(run_dir: str | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    try:
        return read_json(Path(run_dir) / "metrics.json")
    except (OSError, ValueError):
        return None


def work(
    study: Any,
    space: SearchSpace,
    n_trials: int,
    how: TrialRun,
    storage_url: str,
    log: Callable[[str], None],
    stopping: threading.Event,
) -> None:
    """One worker's loop: ask, run, tell, until the study holds ``n_trials`` finished or running trials."""
    from optuna.trial import TrialState

    while not stopping.is_set():
        fail_dead_trials(study)
        c = counts(study)
        if c["complete"] + c["pruned"] + c["running"] >= n_trials:
            return
        if c["failed_run"] >= max(n_trials, 3) and c["complete"] == 0:
            raise UserFacingError(
                f"{c['failed_run']} trials failed in their runs and none finished: see {how.logs_dir}"
            )
        trial = study.ask()
        if (
            ahead_of(study, trial.number) >= n_trials
        ):  # other workers asked at the same moment: the last gives way
            trial.set_user_attr("error", "surplus: the requested trials were taken")
            tell(study, trial, state=TrialState.FAIL)
            return
        state, error = run_trial(study, trial, space, how, storage_url, log)
        if state == "pruned":
            log(f"trial {trial.number}: pruned")
        elif state != "complete":
            log(f"trial {trial.number}: {state}: {error}")
        if state == "config":
            stopping.set()
            raise ConfigError(f"trial {trial.number} stopped at its config: {error}")
