"""What a sweep's worker and the trial it starts agree on: the ``MNIST_BENCH_TRIAL`` environment variable
(JSON: storage URL, study name, trial id, monitored metric, the pruner's name and arguments), the exit code of
a pruned run, and that a trial ends with its worker. The worker's side is :mod:`mnist_bench.sweep.study`; the
trial's is
:class:`mnist_bench.callbacks.pruning.TrialPruning`, which ``mnist-bench fit`` adds when the variable is set.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from mnist_bench.errors import UserFacingError

TRIAL_VARIABLE = "MNIST_BENCH_TRIAL"
PRUNED_EXIT = 3
TRIAL_KEYS = ("storage", "study", "trial_id", "monitor", "pruner")


def trial_environment(
    storage: str, study: str, trial_id: int, monitor: str, pruner: dict[str, Any]
) -> dict[str, str]:
    """The variable a worker sets for the run of one trial."""
    spec = {"storage": storage, "study": study, "trial_id": trial_id, "monitor": monitor, "pruner": pruner}
    return {TRIAL_VARIABLE: json.dumps(spec)}


def die_with_worker() -> None:
    """A trial's run ends with the sweep worker that started it (Linux: the kernel sends SIGKILL when the
    worker goes), so that a killed sweep leaves no run training alone. Called first thing in a trial's
    process."""
    if not os.environ.get(TRIAL_VARIABLE) or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker went before the call
        os._exit(1)


def trial_from_environment() -> dict[str, Any] | None:
    text = os.environ.get(TRIAL_VARIABLE)
    if not text:
        return None
    try:
        spec = json.loads(text)
        return {key: spec[key] for key in TRIAL_KEYS}
    except (ValueError, KeyError, TypeError):
        raise UserFacingError(
            f"{TRIAL_VARIABLE} is set but is not a sweep's trial ({text[:80]!r}). Fix: unset it; "
            "mnist-bench sweep sets it for the runs it starts"
        ) from None


def open_trial(storage: str, study: str, trial_id: int, pruner: dict[str, Any]) -> Any:
    """The worker's trial, opened in the run's process: the study with the worker's pruner built again (Optuna
    keeps samplers and pruners out of the storage), and its storage opened as the worker opens it (SQLite
    waits for a lock as long)."""
    import optuna

    from mnist_bench.sweep.optuna_parts import make_pruner, make_storage

    loaded = optuna.load_study(study_name=study, storage=make_storage(storage), pruner=make_pruner(pruner))
    return optuna.trial.Trial(loaded, int(trial_id))
