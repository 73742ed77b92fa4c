"""Test-time pictures: the confusion matrix and a grid of predictions, to TensorBoard and as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from mnist_bench.plots import boxed_digits, confusion_matrix_figure, digit_grid_figure, save_figure


class TestFigures(Callback):
    """Collects the first ``grid_size`` test images and the first ``grid_size`` misclassified ones, then draws
    ``confusion_matrix.png``, ``predictions.png`` and ``misclassified.png`` in the run dir and logs the first
    two to TensorBoard as images. For a detector (test step outputs with ``boxes`` and ``true_boxes``) it also
    draws ``detections.png``: the same images with the predicted box in red and the ink box in green. Pixels
    and class names come from the model's dataset info."""

    def __init__(self, run_dir: str | Path, grid_size: int = 48):
        self.run_dir = Path(run_dir)
        self.grid_size = grid_size
        self._reset()

    def _reset(self) -> None:
        self.samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.wrong: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.boxes: list[torch.Tensor] = []
        self.true_boxes: list[torch.Tensor] = []
        self._n_samples = self._n_wrong = 0

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
        x, y = batch[0], batch[1]
        preds = outputs["preds"]
        if self._n_samples < self.grid_size:
            k = self.grid_size - self._n_samples
            self.samples.append((x[:k].detach().cpu(), preds[:k].cpu(), y[:k].cpu()))
            if "boxes" in outputs:
                self.boxes.append(outputs["boxes"][:k].detach().cpu())
                self.true_boxes.append(outputs["true_boxes"][:k].detach().cpu())
            self._n_samples += len(y[:k])
        if self._n_wrong < self.grid_size:
            mask = preds != y
            if mask.any():
                k = self.grid_size - self._n_wrong
                self.wrong.append((x[mask][:k].detach().cpu(), preds[mask][:k].cpu(), y[mask][:k].cpu()))
                self._n_wrong += len(y[mask][:k])

    @staticmethod
    def _cat(parts: list[tuple[torch.Tensor, ...]], pl_module: LightningModule) -> tuple[Any, Any, Any]:
        if not parts:
            size = pl_module.dataset.image_size
            return torch.zeros(0, 1, size, size).numpy(), torch.zeros(0).numpy(), torch.zeros(0).numpy()
        x, p, y = (torch.cat(t) for t in zip(*parts, strict=True))
        return pl_module.dataset.denormalize(x.float()).numpy(), p.numpy(), y.numpy()

    def _detections_figure(self, pl_module: LightningModule) -> Any:
        pixels, preds, targets = self._cat(self.samples, pl_module)
        drawn = boxed_digits(pixels, torch.cat(self.boxes).numpy(), torch.cat(self.true_boxes).numpy())
        return digit_grid_figure(
            drawn,
            preds,
            targets,
            f"{pl_module.model_name}: predicted box (red), ink box (green), predicted class",
            class_names=pl_module.dataset.class_names,
        )

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        confusion = pl_module.test_confusion.compute()  # on every rank: under DDP it gathers from all of them
        if not trainer.is_global_zero:
            return
        run_dir = self.run_dir
        name = pl_module.model_name
        names = pl_module.dataset.class_names
        figures = {
            "confusion_matrix": confusion_matrix_figure(
                confusion.cpu().numpy(), f"{name}: confusion matrix (test)", class_names=names
            ),
            "predictions": digit_grid_figure(
                *self._cat(self.samples, pl_module),
                f"{name}: test predictions (wrong in red, true label given)",
                class_names=names,
            ),
            "misclassified": digit_grid_figure(
                *self._cat(self.wrong, pl_module),
                f"{name}: misclassified test images, predicted (true)",
                class_names=names,
            ),
        }
        if self.boxes:
            figures["detections"] = self._detections_figure(pl_module)
        step = trainer.global_step
        for tag, fig in figures.items():
            if tag != "misclassified":
                for logger in trainer.loggers:
                    if isinstance(logger, TensorBoardLogger):
                        logger.experiment.add_figure(f"test/{tag}", fig, global_step=step, close=False)
            save_figure(fig, run_dir / f"{tag}.png")
