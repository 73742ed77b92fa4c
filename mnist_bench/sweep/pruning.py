"""The trial's side of a sweep: a run started by a sweep worker reports its validation metric to the study after every
epoch and stops early when the study's pruner says so.

The worker passes the trial in the ``MNIST_BENCH_TRIAL`` environment variable (JSON: storage URL, study name, trial
id, monitored metric, the pruner's name and arguments); ``mnist-bench fit`` then adds :class:`TrialPruning` to its callbacks. A pruned run ends with
status ``pruned`` in its ``metrics.json`` and exit code :data:`PRUNED_EXIT`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from mnist_bench.errors import UserFacingError
from mnist_bench.sweep.optuna_parts import make_pruner, make_storage

TRIAL_VARIABLE = "MNIST_BENCH_TRIAL"
PRUNED_EXIT = 3


class TrialPruned(UserFacingError):
    """The study's pruner stopped this trial (not an error: the sweep records it as pruned)."""

    exit_code = PRUNED_EXIT
    status = "pruned"


def die_with_worker() -> None:
    """A trial's run ends with the sweep worker that started it (Linux: the kernel sends SIGKILL when the worker
    goes), so that a killed sweep leaves no run training alone. Called first thing in a trial's process."""
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
        return {key: spec[key] for key in ("storage", "study", "trial_id", "monitor", "pruner")}
    except (ValueError, KeyError, TypeError):
        raise UserFacingError(f"{TRIAL_VARIABLE} is set but is not a sweep's trial ({text[:80]!r}). Fix: unset it; "
                              "mnist-bench sweep sets it for the runs it starts") from None


class TrialPruning(Callback):
    """Reports ``monitor`` after each validation to the trial (rank 0) and raises :class:`TrialPruned` on every rank
    when the pruner says stop (each rank reads the same answer from the study's storage)."""

    def __init__(self, storage: str, study: str, trial_id: int, monitor: str, pruner: dict[str, Any]):
        import optuna

        self.monitor = monitor
        # the worker's pruner, built again here: Optuna keeps samplers and pruners out of the storage; the storage
        # as the worker opens it (SQLite waits for a lock as long)
        self.study = optuna.load_study(study_name=study, storage=make_storage(storage), pruner=make_pruner(pruner))
        self.trial = optuna.trial.Trial(self.study, int(trial_id))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return  # a metric that is not a validation one (e.g. test/acc) is the objective only at the end
        epoch = trainer.current_epoch
        if trainer.is_global_zero:
            self.trial.report(float(value), step=epoch)
        trainer.strategy.barrier("mnist_bench_trial_report")
        if self.trial.should_prune():
            raise TrialPruned(f"trial {self.trial.number} pruned after epoch {epoch} ({self.monitor} "
                              f"{float(value):.4f})")


def pruning_callbacks() -> list[Callback]:
    """The callback a sweep's trial needs, or none for an ordinary run."""
    spec = trial_from_environment()
    return [] if spec is None else [TrialPruning(**spec)]
