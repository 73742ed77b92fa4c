"""One line per epoch, for logs and benchmark runs where a live progress bar is off."""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer


class EpochLine(Callback):
    """Prints ``[model] epoch 3/6  train/loss 0.051  val/acc 0.9921  (41.2 s)`` after each epoch."""

    def __init__(self) -> None:
        self._start: float | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the previous epoch's metrics are complete only now (Lightning logs them after the epoch-end hooks)
        if trainer.current_epoch > 0:
            self._print(trainer, pl_module, trainer.current_epoch - 1)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer, pl_module, trainer.current_epoch - 1)

    def _print(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> None:
        if not trainer.is_global_zero or epoch < 0:
            return
        row = next((r for r in pl_module.history if r["epoch"] == epoch), {})
        parts = [f"{key} {row[key]:.4f}" for key in ("train/loss", "val/loss", "val/acc") if key in row]
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        print(f"[{pl_module.model_name}] epoch {epoch + 1}/{trainer.max_epochs}  {'  '.join(parts)}  ({elapsed:.1f} s)",
              flush=True)
