"""The per-epoch history of a fit: one row per epoch with its train and val loss, accuracy, F1 and the model's
own epoch metrics (what the model logs under ``train/`` and ``val/``), kept in checkpoints so a resumed run
has it all.

Lightning calls a callback's ``on_train_epoch_end`` before the model's, and the model logs the epoch's
training values in its own. So an epoch's training values are taken once they are logged: at the next epoch's
start, at the end of training, and when the checkpoint written at the epoch's end asks for this callback's
state. Validation values are taken when each validation ends (after the model's hook).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

LEGACY_KEY = "mnist_bench_history"  # where checkpoints written before this callback kept the history


def history_in(checkpoint: dict[str, Any]) -> list[dict[str, float]]:
    """The history a checkpoint holds: this callback's state, or the model's key of older checkpoints."""
    state = (checkpoint.get("callbacks") or {}).get(EpochHistory.__qualname__)
    rows = state.get("rows") if isinstance(state, dict) else checkpoint.get(LEGACY_KEY)
    return [dict(row) for row in rows] if isinstance(rows, list) else []


def run_history(trainer: Trainer) -> list[dict[str, float]]:
    """The run's history so far (empty when the trainer keeps none)."""
    history = next((cb for cb in trainer.callbacks if isinstance(cb, EpochHistory)), None)
    return history.current(trainer) if history is not None else []


class EpochHistory(Callback):
    """Per-epoch rows of the fit; ``rows`` starts from a tested or validated checkpoint's history (Lightning
    restores callbacks only when it fits)."""

    def __init__(self, rows: list[dict[str, float]] | None = None) -> None:
        self.rows: list[dict[str, float]] = [dict(row) for row in rows or []]
        self._trainer: Trainer | None = None
        self._train_pending: int | None = None  # the epoch whose training values the model is about to log

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._take_train(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_pending = trainer.current_epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._take_train(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._take(trainer, "val/", trainer.current_epoch)

    def current(self, trainer: Trainer) -> list[dict[str, float]]:
        self._take_train(trainer)
        return self.rows

    def _take_train(self, trainer: Trainer) -> None:
        if self._train_pending is not None:
            self._take(trainer, "train/", self._train_pending)
            self._train_pending = None

    def _take(self, trainer: Trainer, prefix: str, epoch: int) -> None:
        values = {
            key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith(prefix)
        }
        if not values:
            return
        row = next((r for r in self.rows if r["epoch"] == epoch), None)
        if row is None:
            row = {"epoch": epoch}
            self.rows.append(row)
        row.update(values)  # one host sync per epoch

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is not None:  # asked by the checkpoint written at the epoch's end
            self._take_train(self._trainer)
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict.get("rows", [])]

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.state_key not in (
            checkpoint.get("callbacks") or {}
        ):  # an older checkpoint: the model kept it
            self.rows = history_in(checkpoint)
