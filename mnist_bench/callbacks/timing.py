"""Wall-clock timing of a run: training loop alone, whole fit, test; images per second."""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def _sync(pl_module: LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


def _batch_len(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)


class TimingCallback(Callback):
    """Measures ``time/train_s`` (training batches only, validation excluded), ``time/fit_s``, ``time/test_s``
    and the images seen, with CUDA synchronized before every clock read. Under DDP the ranks meet at a barrier
    before each clock read and images are counted over all ranks.

    Its totals live in the checkpoint, so a resumed run keeps counting from where it stopped.
    """

    def __init__(self) -> None:
        self.train_s = 0.0
        self.fit_s = 0.0
        self.test_s = 0.0
        self.train_images = 0
        self.test_images = 0
        self.val_images = 0
        self.epoch_s: list[float] = []
        self._fit_start: float | None = None
        self._epoch_start: float | None = None
        self._epoch_train_s = 0.0
        self._in_epoch = False
        self._test_start: float | None = None

    def _now(self, pl_module: LightningModule) -> float:
        _sync(pl_module)
        trainer = pl_module.trainer
        if trainer.world_size > 1:
            trainer.strategy.barrier("timing")  # the clock measures the whole job: every rank got here
        return time.perf_counter()

    # fit
    # --------------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = self._now(pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fit_start is not None:
            self.fit_s += self._now(pl_module) - self._fit_start
            self._fit_start = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_train_s = 0.0
        self._in_epoch = True
        self._epoch_start = self._now(pl_module)

    def _pause(self, pl_module: LightningModule) -> None:
        if self._epoch_start is not None:
            self._epoch_train_s += self._now(pl_module) - self._epoch_start
            self._epoch_start = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.train_images += _batch_len(batch) * trainer.world_size  # ranks get equal training shards

    # Validation inside a training epoch stops the training clock; the next training batch restarts it, so the
    # checkpoint written after validation is not counted either.
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._in_epoch:
            self._pause(pl_module)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._in_epoch and self._epoch_start is None:
            self._epoch_start = self._now(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pause(pl_module)
        self.train_s += self._epoch_train_s
        self.epoch_s.append(self._epoch_train_s)
        self._epoch_train_s = 0.0
        self._in_epoch = False

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_images = 0

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self.val_images += _batch_len(batch)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.world_size > 1 and not trainer.sanity_checking:
            self.val_images = int(pl_module.all_gather(torch.tensor(self.val_images)).sum())

    # test
    # --------------------------------------------------------------------------------------------------------
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.test_images = 0
        self._test_start = self._now(pl_module)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.test_images += _batch_len(batch)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._test_start is not None:
            self.test_s = self._now(pl_module) - self._test_start
            self._test_start = None
        if trainer.world_size > 1:  # evaluation shards differ by up to one image: count them all
            self.test_images = int(pl_module.all_gather(torch.tensor(self.test_images)).sum())

    # results
    # -----------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, float]:
        return {
            "time/fit_s": round(self.fit_s, 3),
            "time/train_s": round(self.train_s, 3),
            "time/test_s": round(self.test_s, 3),
            "throughput/train_img_s": round(self.train_images / self.train_s, 1) if self.train_s else None,
            "throughput/infer_img_s": round(self.test_images / self.test_s, 1) if self.test_s else None,
            "test/images": self.test_images or None,  # how many test images the metrics are over
            "val/images": self.val_images or None,  # the last validation pass's
            "time/epoch_train_s": [round(s, 3) for s in self.epoch_s],  # each epoch's training loop
        }

    def state_dict(self) -> dict[str, Any]:
        # The fit clock is still running when a checkpoint is written: store the total up to now. A checkpoint
        # written before this epoch's training time is closed (after a mid-epoch validation) counts that part
        # in.
        fit_s = self.fit_s + (time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0)
        return {
            "train_s": self.train_s + self._epoch_train_s,
            "fit_s": fit_s,
            "train_images": self.train_images,
            "epoch_s": [*self.epoch_s, self._epoch_train_s] if self._epoch_train_s else list(self.epoch_s),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_s = float(state_dict.get("train_s", 0.0))
        self.fit_s = float(state_dict.get("fit_s", 0.0))
        self.train_images = int(state_dict.get("train_images", 0))
        self.epoch_s = [float(s) for s in state_dict.get("epoch_s", [])]
