"""The base LightningModule shared by all five models."""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from mnist_bench.cuda_probe import skip_nvml_probe_without_nvml
from mnist_bench.data.constants import IMAGE_SIZE, NUM_CLASSES
from mnist_bench.errors import ConfigError, UserFacingError
from mnist_bench.models.training_loss import TrainingLossWindow

skip_nvml_probe_without_nvml()  # lightning (imported above) has just turned the NVML probe on

CHECK_EVERY = 50  # training steps between two checks for a non-finite loss (one host sync each)


class DivergenceError(UserFacingError):
    """The training loss stopped being finite; the run is recorded as failed."""


class InputAdapter(nn.Module):
    """Adapts a normalized N×1×28×28 batch to what a network expects: size (bilinear resize) and channel count.

    It runs on the device, inside the model, so one DataModule serves every model unchanged.
    """

    def __init__(self, image_size: int = IMAGE_SIZE, in_chans: int = 1):
        super().__init__()
        self.image_size = image_size
        self.in_chans = in_chans

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        return x


def class_and_kwargs(factory: Any) -> tuple[type | None, dict[str, Any]]:
    """The class that a config's ``class_path`` factory (a ``functools.partial``) builds, and the arguments it has."""
    if inspect.isclass(factory):
        return factory, {}
    if isinstance(factory, functools.partial):
        cls = next((a for a in (factory.func, *factory.args) if inspect.isclass(a)), None)
        return cls, dict(factory.keywords)
    return None, {}


def plain(value: Any) -> Any:
    """``value`` with subclasses of bool, int, float and str (jsonargparse's typed values) made plain, recursively."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if type(value) in (list, tuple) else [plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def check_learning_rates(optimizer: Any, scheduler: Any) -> None:
    """A learning rate that is not a positive number fails when the model is built, not at the first step."""
    for where, factory in (("optimizer", optimizer), ("scheduler", scheduler)):
        _, kwargs = class_and_kwargs(factory)
        for key in ("lr", "max_lr", "base_lr", "eta_min"):
            value = kwargs.get(key)
            if value is None or isinstance(value, Tensor):
                continue
            if not isinstance(value, (int, float)) or value != value or value < 0 or (value == 0 and key != "eta_min"):
                raise ConfigError(f"model.{where}.init_args.{key} must be a positive number, got {value!r}")


def metric_collection() -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro"),
            "f1": MulticlassF1Score(num_classes=NUM_CLASSES, average="macro"),
        }
    )


class MNISTClassifier(LightningModule):
    """Base for every model: input adaptation, cross-entropy, per-stage accuracy and macro F1, test confusion matrix.

    Subclasses build ``self.net`` (a plain ``nn.Module`` mapping the adapted batch to logits) and set ``model_name``.
    Schedulers are stepped every optimizer step; one whose class takes ``total_steps`` (``OneCycleLR``,
    ``WarmupCosineLR``) gets it from the trainer.
    """

    model_name: ClassVar[str] = "model"
    loss_kind: ClassVar[str] = "cross-entropy"
    pretrained: bool = False
    # precision auto on a CPU with native bf16: bf16-mixed only for the models measured faster in it
    bf16_on_cpu: ClassVar[bool] = False
    mixed_precision: ClassVar[bool] = True  # False: fp32 on every device unless the config names a precision

    def __init__(
        self,
        image_size: PositiveInt = IMAGE_SIZE,
        in_chans: PositiveInt = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        check_learning_rates(optimizer, scheduler)
        self.image_size = image_size
        self.adapt = InputAdapter(image_size, in_chans)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        metrics = metric_collection()
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # nan_strategy="disable": a non-finite loss must show, not be averaged away
        self.mean_loss = nn.ModuleDict({f"{stage}_loss": MeanMetric(nan_strategy="disable")
                                        for stage in ("val", "test")})
        self.train_loss = TrainingLossWindow(CHECK_EVERY)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=NUM_CLASSES)
        self.history: list[dict[str, float]] = []
        self._total_steps: int | None = None  # what a step-counting LR schedule was built for
        self._resumed_total_steps: int | None = None  # ... in the checkpoint a run resumes from

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name before and after every hook call, about 60 times a training step, and
        # nn.Module.__setattr__ first checks each value against parameters, modules and buffers (through Python
        # isinstance hooks): about 1% of the CNN's step on a 2-core CPU. A name or None is none of those.
        if name == "_current_fx_name" and (value is None or isinstance(value, str)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    # --- forward and steps -------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        x = self.adapt(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def loss(self, logits: Tensor, y: Tensor, stage: str) -> Tensor:
        smoothing = self.label_smoothing if stage == "train" else 0.0
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    def _metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        # Metrics are only updated here and logged once per epoch (below): a self.log call per step costs about
        # as much as this small CNN's optimizer step on a CPU. No host sync happens in the step.
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y, stage)
        preds = logits.argmax(dim=1)
        self._metrics(stage).update(preds, y)
        self.update_loss(stage, loss, len(y))
        return {"loss": loss, "preds": preds}

    def update_loss(self, stage: str, loss: Tensor, batch_size: int) -> None:
        """Adds a batch's mean loss to the epoch mean, weighted by the batch size. (For validation and test the
        loss is repeated once per image instead of passed as ``weight``: with ``nan_strategy="disable"``
        torchmetrics 1.9 ignores weights.)"""
        if stage == "train":
            self.train_loss.add(loss, batch_size, self.global_step)
        else:
            self.mean_loss[f"{stage}_loss"].update(loss.detach().expand(batch_size))

    def _epoch_loss(self, stage: str) -> Tensor:
        if stage == "train":  # the rank's own mean (ranks train on equal shares); sync_dist averages the ranks
            return self.train_loss.mean()
        return self.mean_loss[f"{stage}_loss"].compute()  # reduced over ranks by torchmetrics

    def _reset_epoch_loss(self, stage: str) -> None:
        if stage == "train":
            self.train_loss.reset()
        else:
            self.mean_loss[f"{stage}_loss"].reset()

    def _log_epoch(self, stage: str) -> None:
        metrics = self._metrics(stage)
        values = {f"{stage}/loss": self._epoch_loss(stage)}
        if any(metric.update_called for metric in metrics.values()):  # the detector has no train predictions
            values.update(metrics.compute())
        # torchmetrics has reduced the metrics over DDP ranks already (sync_dist averages equal numbers); the
        # training loss is averaged here. On one device sync_dist is a no-op.
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        metrics.reset()
        self._reset_epoch_loss(stage)
        if stage != "test" and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._record(values)

    def _record(self, values: dict[str, Tensor]) -> None:
        """Per-epoch history (train and val loss, accuracy, F1), kept in checkpoints so a resumed run has it all."""
        row = next((r for r in self.history if r["epoch"] == self.current_epoch), None)
        if row is None:
            row = {"epoch": self.current_epoch}
            self.history.append(row)
        row.update({key: float(value) for key, value in values.items()})  # one host sync per epoch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mnist_bench_history"] = [dict(row) for row in self.history]
        if self._total_steps is not None:
            checkpoint["mnist_bench_total_steps"] = int(self._total_steps)
        # Config values arrive as jsonargparse's typed subclasses (PositiveInt, ...); stored as plain numbers, the
        # checkpoint stays loadable with torch.load(weights_only=True).
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = [dict(row) for row in checkpoint.get("mnist_bench_history", [])]
        self._resumed_total_steps = checkpoint.get("mnist_bench_total_steps")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")["loss"]
        if self.train_loss.full:
            self.check_finite()
        return loss

    def check_finite(self) -> None:
        """Stops the run at the first non-finite training loss (one host sync, every CHECK_EVERY steps). Under DDP
        every rank learns of it, so that all stop together."""
        steps = self.all_gather(self.train_loss.fold())  # one per rank (the tensor itself on one device)
        bad = steps[steps >= 0]
        step = int(bad.min()) if len(bad) else -1
        if step >= 0:
            fix = "lower model.optimizer.init_args.lr"
            if not str(self.trainer.precision).startswith(("32", "64")):
                fix += " or use --trainer.precision=32-true"
            raise DivergenceError(
                f"training loss became NaN or infinite at epoch {self.current_epoch}, step {step}: {fix}")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self._shared_step(batch, "test")
        self.test_confusion.update(out["preds"], batch[1])
        return out

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # --- the contract that predict, export and the run report rely on -----------------------------------------
    onnx_kind: ClassVar[str] = "classifier"  # how export.py writes the model: "classifier" or "detector"

    @torch.no_grad()
    def class_scores(self, x: Tensor) -> Tensor:
        """N×10 class scores for a normalized batch, whose argmax is the prediction: here the softmax of the
        logits."""
        return self(x).float().softmax(dim=1)

    def extra_metrics(self) -> dict[str, Any]:
        """Model-specific entries for metrics.json (the run report adds them after the test pass)."""
        return {}

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.class_scores(x)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    # --- optimization ------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]] | Any:
        """What the optimizer gets; models override this for per-group LRs or weight decay."""
        return self.parameters()

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The config's optimizer over :meth:`parameter_groups`. On CUDA an optimizer with a fused kernel (Adam,
        AdamW, SGD, ...) uses it unless the config sets ``fused`` or ``foreach``: one kernel launch for all
        parameters instead of several per tensor, which the small models' short GPU steps notice."""
        cls, given = class_and_kwargs(self.optimizer)
        extra = {}
        if (self.device.type == "cuda" and cls is not None and "fused" in inspect.signature(cls).parameters
                and all(given.get(key) is None for key in ("fused", "foreach"))
                and not given.get("differentiable")):
            extra["fused"] = True
        return self.optimizer(self.parameter_groups(), **extra)

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        if self.scheduler is None:
            return optimizer
        scheduler_cls, given = class_and_kwargs(self.scheduler)
        kwargs = {}
        if scheduler_cls is not None and "total_steps" in inspect.signature(scheduler_cls).parameters:
            if given.get("total_steps") is None:
                kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
            planned = self._resumed_total_steps
            self._total_steps = given.get("total_steps") or kwargs["total_steps"]
            if planned is not None and planned != self._total_steps:
                raise ConfigError(
                    f"model.scheduler: the run being resumed planned its {scheduler_cls.__name__} over {planned} "
                    f"optimizer steps, and these settings give {self._total_steps} (trainer.max_epochs, "
                    "data.batch_size or accumulate_grad_batches changed): the schedule cannot stretch. Fix: resume "
                    "with the run's own settings, or start a new run")
        try:
            scheduler = self.scheduler(optimizer, **kwargs)
        except (ZeroDivisionError, ValueError) as err:  # e.g. OneCycleLR when pct_start × total_steps is exactly 1
            name = scheduler_cls.__name__ if scheduler_cls is not None else "the scheduler"
            steps = f" over {kwargs['total_steps']} training steps" if "total_steps" in kwargs else ""
            raise ConfigError(f"model.scheduler: {name} cannot schedule this run{steps} ({err or type(err).__name__}). "
                              "Fix: train for more steps or change the scheduler's init_args") from err
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
