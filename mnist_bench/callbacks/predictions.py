"""Every test image's prediction, kept in the run dir, so that any two runs on the same test set can be
compared after the fact (the benchmark's paired tests read them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from mnist_bench.utils import atomic_path

PREDICTIONS_FILE = "test_predictions.npz"


class TestPredictions(Callback):
    """Writes ``test_predictions.npz`` after each test pass: ``index`` (the test image's position in the test
    set), ``target``, ``pred``, ``confidence`` (the predicted class's probability; NaN for a model whose test
    step gives no ``scores``) and ``scores`` (N×classes, float16), with ``model``, ``dataset`` and
    ``class_names``. Under DDP the ranks' images are gathered back into test-set order."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._reset()

    def _reset(self) -> None:
        self.targets: list[torch.Tensor] = []
        self.preds: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        self.targets.append(batch[1].detach())
        self.preds.append(outputs["preds"].detach())
        if "scores" in outputs:
            self.scores.append(outputs["scores"].detach().float())

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.preds:
            return
        device = pl_module.device
        target = torch.cat(self.targets).to(device)
        pred = torch.cat(self.preds).to(device)
        scores = torch.cat(self.scores).to(device) if len(self.scores) == len(self.preds) else None
        if trainer.world_size > 1:
            sizes = pl_module.all_gather(torch.tensor(len(pred), device=device))
            if int(sizes.min()) != int(
                sizes.max()
            ):  # not a DistributedSampler's even split: no order to restore
                rank_zero_warn(
                    f"{PREDICTIONS_FILE} not written: the ranks scored {sizes.tolist()} test images"
                )
                return
            target, pred = (
                _in_test_set_order(pl_module.all_gather(target)),
                _in_test_set_order(pl_module.all_gather(pred)),
            )
            if scores is not None:
                scores = _in_test_set_order(pl_module.all_gather(scores))
        if not trainer.is_global_zero:
            return
        full = _test_set_size(trainer)
        if trainer.world_size > 1 and full is not None:
            target, pred = (
                target[:full],
                pred[:full],
            )  # the DistributedSampler's padding (repeated images) dropped
            scores = scores[:full] if scores is not None else None
        n = len(pred)
        confidence = (
            scores.gather(1, pred[:, None].long())[:, 0]
            if scores is not None
            else torch.full((n,), float("nan"))
        )
        record = {
            "index": np.arange(n, dtype=np.int32),
            "target": target.cpu().numpy().astype(np.int16),
            "pred": pred.cpu().numpy().astype(np.int16),
            "confidence": confidence.cpu().numpy().astype(np.float32),
            "model": np.array(pl_module.model_name),
            "dataset": np.array(pl_module.dataset.name),
            "class_names": np.array(pl_module.dataset.class_names),
        }
        if scores is not None:
            record["scores"] = scores.cpu().numpy().astype(np.float16)
        with atomic_path(self.run_dir / PREDICTIONS_FILE) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to the temporary name
                np.savez_compressed(f, **record)
        self._reset()


def _in_test_set_order(gathered: torch.Tensor) -> torch.Tensor:
    """ranks × n × ... from a DistributedSampler without shuffling (rank r holds images r, r + W, r + 2W, ...)
    back to one sequence in test-set order."""
    return gathered.transpose(0, 1).reshape(-1, *gathered.shape[2:])


def _test_set_size(trainer: Trainer) -> int | None:
    test_set = getattr(trainer.datamodule, "test_set", None) if trainer.datamodule is not None else None
    return len(test_set) if test_set is not None else None


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """A run's ``test_predictions.npz`` as plain arrays (strings as Python str)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: (data[key].item() if data[key].ndim == 0 else data[key]) for key in data.files}
