"""Progress: one line per epoch where a live bar is off (logs, benchmark runs), and the run's remaining time
in either (Lightning's bar shows only the epoch's)."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar, Timer

from mnist_bench.callbacks.history import run_history


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _batch_len(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)


def expected_test_images(trainer: Trainer) -> int | None:
    """How many images the closing test pass will score: the test set (or the dataset's test file count,
    before it is loaded), cut by ``limit_test_batches``."""
    dm = trainer.datamodule
    test_set = getattr(dm, "test_set", None)
    if test_set is not None:
        n = len(test_set)
    else:
        spec = getattr(dm, "spec", None)
        try:
            n = spec.raw_files[spec.split_files(train=False)[0]][1]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            return None
    limit, eval_batch = trainer.limit_test_batches, getattr(dm, "eval_batch_size", None)
    if isinstance(limit, int) and eval_batch:
        return min(n, limit * eval_batch)
    if isinstance(limit, float) and limit < 1.0:
        return int(n * limit)
    return n


class RunClock(Callback):
    """The run's remaining time: the epochs left × the mean epoch time so far (validation included), plus the
    test pass at the validation's seconds per image; bounded by ``max_steps`` and ``max_time``."""

    def __init__(self) -> None:
        self._train_start: float | None = None
        self._first_epoch = 0
        self._epoch_ends: list[float] = []
        self._val_start: float | None = None
        self.val_s = 0.0
        self.val_images = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_start = time.perf_counter()  # after the sanity check
        self._first_epoch = trainer.current_epoch  # a resumed run counts its own epochs
        self._epoch_ends = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_ends.append(time.perf_counter())  # after the epoch's validation

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_start = time.perf_counter()

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._val_start is not None:
            self.val_images += _batch_len(batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._val_start is not None:
            self.val_s += time.perf_counter() - self._val_start
            self._val_start = None

    def remaining_s(self, trainer: Trainer, now: float | None = None) -> float | None:
        """Seconds left in the run, or None before its first epoch has ended (or with no bound on its
        epochs)."""
        if self._train_start is None or not self._epoch_ends:
            return None
        now = time.perf_counter() if now is None else now
        done = len(self._epoch_ends)
        per_epoch = (self._epoch_ends[-1] - self._train_start) / done
        into_epoch = now - self._epoch_ends[-1]  # the epoch going on, if any
        fit_left = None
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            fit_left = max(0.0, (trainer.max_epochs - self._first_epoch - done) * per_epoch - into_epoch)
        if trainer.max_steps is not None and trainer.max_steps >= 0 and trainer.num_training_batches:
            batches_left = max(0, trainer.max_steps - trainer.global_step)
            by_steps = batches_left / trainer.num_training_batches * per_epoch
            fit_left = by_steps if fit_left is None else min(fit_left, by_steps)
        if fit_left is None:
            return None
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None and timer.time_remaining("train") is not None:
            fit_left = min(fit_left, timer.time_remaining("train"))
        test_images = expected_test_images(trainer)
        test = test_images * self.val_s / self.val_images if test_images and self.val_images else 0.0
        return fit_left + test


def run_clock(trainer: Trainer) -> RunClock | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, RunClock)), None)


class EpochLine(Callback):
    """Prints ``[model] epoch 3/6  train/loss 0.051  val/acc 0.9921  (41.2 s; about 1.1 min left in the run)``
    after each epoch."""

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
        row = next((r for r in run_history(trainer) if r["epoch"] == epoch), {})
        parts = [f"{key} {row[key]:.4f}" for key in ("train/loss", "val/loss", "val/acc") if key in row]
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        clock = run_clock(trainer)
        left = clock.remaining_s(trainer) if clock is not None else None
        when = f"{elapsed:.1f} s" + (f"; about {_minutes(left)} left in the run" if left is not None else "")
        print(
            f"[{pl_module.model_name}] epoch {epoch + 1}/{trainer.max_epochs}  {'  '.join(parts)}  ({when})",
            flush=True,
        )


class RunProgressBar(RichProgressBar):
    """Lightning's rich bar, with the run's remaining time beside the epoch's."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        clock = run_clock(trainer)
        left = clock.remaining_s(trainer) if clock is not None else None
        if left is not None and trainer.training:
            metrics["run left"] = f"~{_minutes(left)}"
        return metrics
