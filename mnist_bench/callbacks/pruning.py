"""A sweep's trial seen from its run: report the validation metric to the study after every epoch, and stop
when the study's pruner says so. A pruned run ends with status ``pruned`` in its ``metrics.json`` and exit
code
:data:`mnist_bench.sweep.protocol.PRUNED_EXIT`."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from mnist_bench.errors import UserFacingError
from mnist_bench.sweep.protocol import PRUNED_EXIT, open_trial, trial_from_environment


class TrialPruned(UserFacingError):
    """The study's pruner stopped this trial (not an error: the sweep records it as pruned)."""

    exit_code = PRUNED_EXIT
    status = "pruned"


class TrialPruning(Callback):
    """Reports ``monitor`` after each validation to the trial (rank 0) and raises :class:`TrialPruned` on
    every rank when the pruner says stop (each rank reads the same answer from the study's storage)."""

    def __init__(self, storage: str, study: str, trial_id: int, monitor: str, pruner: dict[str, Any]):
        self.monitor = monitor
        self.trial = open_trial(storage, study, trial_id, pruner)

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
            raise TrialPruned(
                f"trial {self.trial.number} pruned after epoch {epoch} ({self.monitor} {float(value):.4f})"
            )


def pruning_callbacks() -> list[Callback]:
    """The callback a sweep's trial needs, or none for an ordinary run."""
    spec = trial_from_environment()
    return [] if spec is None else [TrialPruning(**spec)]
