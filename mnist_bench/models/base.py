"""The base LightningModule shared by every model, and the contract that predict, export and the run report
use."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from mnist_bench.data.datasets import DatasetInfo
from mnist_bench.errors import ConfigError, UserFacingError
from mnist_bench.lightning_overhead import skip_nvml_probe_without_nvml
from mnist_bench.models.components.adapter import InputAdapter
from mnist_bench.models.init_args import check_learning_rates, plain_values
from mnist_bench.models.optimization import build_optimizer, build_schedule
from mnist_bench.models.training_loss import TrainingLossWindow

skip_nvml_probe_without_nvml()  # lightning (imported above) has just turned the NVML probe on

CHECK_EVERY = 50  # training steps between two checks for a non-finite loss (one host sync each)
# torch.compile's modes (torch._inductor.list_mode_options())
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class DivergenceError(UserFacingError):
    """The training loss stopped being finite; the run is recorded as failed."""


def metric_collection(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
        }
    )


class MNISTClassifier(LightningModule):
    """Base for every model: input adaptation, cross-entropy, per-stage accuracy and macro F1, test confusion
    matrix.

    A subclass sets ``model_name``, builds ``self.net`` (a plain ``nn.Module`` mapping the adapted batch to
    ``self.num_classes`` logits) and overrides only these public hooks where it differs: ``step(batch,
    stage)`` (the batch's loss and predictions), ``epoch_metrics(stage)`` (its own per-epoch values),
    ``class_scores`` and ``attack_logits`` (predict, export, the robustness evaluation), ``extra_metrics``
    (metrics.json), ``parameter_groups`` (the optimizer's groups) and ``compile_target``. Everything with a
    leading underscore is the base's own. ``dataset`` (statistics, class names, image size) comes from the
    DataModule through a LightningCLI link and is saved with the model's hyperparameters; left out, it is
    MNIST's. ``compile`` runs ``compile_target()`` through ``torch.compile`` (``compile_mode``) in every
    Trainer stage. The optimizer and schedule are built in ``models/optimization.py``.
    """

    model_name: ClassVar[str] = "model"
    loss_kind: ClassVar[str] = "cross-entropy"
    pretrained: bool = False
    # precision auto on a CPU with native bf16: bf16-mixed only for the models measured faster in it
    bf16_on_cpu: ClassVar[bool] = False
    mixed_precision: ClassVar[bool] = True  # False: fp32 on every device unless the config names a precision

    def __init__(
        self,
        image_size: PositiveInt | None = None,
        in_chans: PositiveInt = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        dataset: dict[str, Any] | None = None,
        compile: bool = False,
        compile_mode: CompileMode = "default",
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        check_learning_rates(optimizer, scheduler)
        self.dataset = DatasetInfo.from_dict(dataset)
        self.num_classes = self.dataset.num_classes
        self.image_size = image_size or self.dataset.image_size
        self.adapt = InputAdapter(self.image_size, in_chans)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.compile_net = compile
        self.compile_mode = compile_mode
        metrics = metric_collection(self.num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # nan_strategy="disable": a non-finite loss must show, not be averaged away
        self.mean_loss = nn.ModuleDict(
            {f"{stage}_loss": MeanMetric(nan_strategy="disable") for stage in ("val", "test")}
        )
        self.train_loss = TrainingLossWindow(CHECK_EVERY)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=self.num_classes)
        self.stop_on_divergence = True  # the LR finder drives the loss up on purpose and turns this off
        self._total_steps: int | None = None  # what a step-counting LR schedule was built for
        self._resumed_total_steps: int | None = None  # ... in the checkpoint a run resumes from
        self._has_batchnorm_1d: bool | None = None  # found on the first batch of one image
        self._warned_single_image = False
        self._trained_batches = self._skipped_batches = 0  # this epoch's

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        target = self.compile_target()
        if self.compile_net and getattr(target, "_compiled_call_impl", None) is None:
            # nn.Module.compile compiles in place: the parameters keep their names, so checkpoints load into
            # an uncompiled model (predict, export) as they are. Compiling happens at the first batch.
            target.compile(mode=self.compile_mode)

    def compile_target(self) -> nn.Module:
        """The part that ``compile`` compiles: the network (a model whose shapes vary from batch to batch
        compiles only its fixed-shape part)."""
        return self.net

    @property
    def compiled(self) -> str | bool:
        """What metrics.json records: the torch.compile mode, or False."""
        return self.compile_mode if self.compile_net else False

    # --- forward and steps
    # -------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        x = self.adapt(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def loss(self, logits: Tensor, y: Tensor, stage: str) -> Tensor:
        smoothing = self.label_smoothing if stage == "train" else 0.0
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        """One batch of ``stage`` ("train", "val" or "test"), the hook a model overrides to compute
        differently.

        Returns ``loss`` (the batch's mean: optimized in training, averaged into ``<stage>/loss``), ``preds``
        (a class per image, for accuracy, F1 and the confusion matrix; a model may leave it out in training)
        and, in test, ``scores`` (N×classes, for the per-image record). Other keys reach the callbacks as they
        are. The base updates the metrics from what it returns; no host sync happens here.
        """
        x, y = batch
        logits = self(x)
        out = {"loss": self.loss(logits, y, stage), "preds": logits.argmax(dim=1)}
        if stage == "test":
            out["scores"] = logits.detach().float().softmax(dim=1)
        return out

    def epoch_metrics(self, stage: str) -> dict[str, Tensor | float]:
        """A model's own values at the end of a ``stage`` epoch, named ``<stage>/<name>``: logged beside the
        loss, accuracy and F1 and kept in the run's history. The model resets what it accumulated for them.
        None here."""
        return {}

    def _stage_metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        # Metrics are only updated here and logged once per epoch (below): a self.log call per step costs
        # about as much as this small CNN's optimizer step on a CPU.
        out = self.step(batch, stage)
        if "preds" in out:
            self._stage_metrics(stage).update(out["preds"], batch[1])
        self._update_loss(stage, out["loss"], len(batch[1]))
        return out

    def _update_loss(self, stage: str, loss: Tensor, batch_size: int) -> None:
        # Adds a batch's mean loss to the epoch mean, weighted by the batch size. For validation and test the
        # loss is repeated once per image instead of passed as ``weight``: with nan_strategy="disable",
        # torchmetrics 1.9 ignores weights (Lightning-AI/torchmetrics#3434; drop this once a release has its
        # fix, PR #3433).
        if stage == "train":
            self.train_loss.add(loss, batch_size, self.global_step)
        else:
            self.mean_loss[f"{stage}_loss"].update(loss.detach().expand(batch_size))

    def _epoch_loss(self, stage: str) -> Tensor:
        if (
            stage == "train"
        ):  # the rank's own mean (ranks train on equal shares); sync_dist averages the ranks
            return self.train_loss.mean()
        return self.mean_loss[f"{stage}_loss"].compute()  # reduced over ranks by torchmetrics

    def _reset_epoch_loss(self, stage: str) -> None:
        if stage == "train":
            self.train_loss.reset()
        else:
            self.mean_loss[f"{stage}_loss"].reset()

    def _log_epoch(self, stage: str) -> None:
        metrics = self._stage_metrics(stage)
        values = {f"{stage}/loss": self._epoch_loss(stage)}
        if any(
            metric.update_called for metric in metrics.values()
        ):  # a step that gave no preds (train) has none
            values.update(metrics.compute())
        # torchmetrics has reduced the metrics over DDP ranks already (sync_dist averages equal numbers); the
        # training loss is averaged here. On one device sync_dist is a no-op.
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        own = self.epoch_metrics(stage)
        if own:
            self.log_dict(own, sync_dist=True)
        metrics.reset()
        self._reset_epoch_loss(stage)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._total_steps is not None:
            checkpoint["mnist_bench_total_steps"] = int(self._total_steps)
        # Config values arrive as jsonargparse's typed subclasses (PositiveInt, ...); stored as plain numbers,
        # the checkpoint stays loadable with torch.load(weights_only=True).
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain_values(checkpoint[key])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_total_steps = checkpoint.get("mnist_bench_total_steps")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        if len(batch[1]) == 1 and self._needs_two_images():
            # e.g. --data.train_subset 129 at batch size 128: the epoch's last batch holds one image
            if not self._warned_single_image:
                rank_zero_warn(
                    "a training batch of one image is skipped: BatchNorm1d layers need two or more "
                    "(batch statistics); the rest of the epoch trains as usual"
                )
                self._warned_single_image = True
            self._skipped_batches += 1
            return None  # Lightning skips the step
        self._trained_batches += 1
        loss = self._step(batch, "train")["loss"]
        if self.train_loss.full:
            self.check_finite()
        return loss

    def _needs_two_images(self) -> bool:
        if self._has_batchnorm_1d is None:
            self._has_batchnorm_1d = any(isinstance(m, nn.BatchNorm1d) for m in self.modules())
        return self._has_batchnorm_1d

    def check_finite(self) -> None:
        """Stops the run at the first non-finite training loss (one host sync, every CHECK_EVERY steps). Under
        DDP every rank learns of it, so that all stop together."""
        if not self.stop_on_divergence:
            self.train_loss.fold()
            return
        steps = self.all_gather(self.train_loss.fold())  # one per rank (the tensor itself on one device)
        bad = steps[steps >= 0]
        step = int(bad.min()) if len(bad) else -1
        if step >= 0:
            fix = "lower model.optimizer.init_args.lr"
            if not str(self.trainer.precision).startswith(("32", "64")):
                fix += " or use --trainer.precision=32-true"
            raise DivergenceError(
                f"training loss became NaN or infinite at epoch {self.current_epoch}, step {step}: {fix}"
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self._step(batch, "test")
        self.test_confusion.update(out["preds"], batch[1])
        return out

    def on_fit_start(self) -> None:
        if getattr(self.trainer.datamodule, "batch_size", None) == 1 and self._needs_two_images():
            raise ConfigError(
                f"data.batch_size 1: {type(self).__name__}'s BatchNorm1d layers cannot train on one "
                "image at a time (their batch statistics need two). Fix: data.batch_size 2 or more"
            )

    def on_train_epoch_start(self) -> None:
        self._trained_batches = self._skipped_batches = 0

    def on_train_epoch_end(self) -> None:
        if self._skipped_batches and not self._trained_batches:
            raise ConfigError(
                f"no batch of epoch {self.current_epoch} trained: each held one image, and "
                f"{type(self).__name__}'s BatchNorm1d layers need two. Fix: data.batch_size (and the "
                "images per device) of 2 or more"
            )
        self.check_finite()
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # --- the contract that predict, export and the run report rely on
    # -----------------------------------------
    onnx_kind: ClassVar[str] = "classifier"  # how export.py writes the model: "classifier" or "detector"

    @torch.no_grad()
    def class_scores(self, x: Tensor) -> Tensor:
        """N×classes scores for a normalized batch, whose argmax is the prediction: here the softmax of the
        logits."""
        return self(x).float().softmax(dim=1)

    def attack_logits(self, x: Tensor) -> Tensor:
        """N×classes differentiable logits for a normalized batch, for gradient attacks
        (``evaluate.attacks``): here the network's own logits, in float32."""
        return self(x).float()

    def extra_metrics(self) -> dict[str, Any]:
        """Model-specific entries for metrics.json (the run report adds them after the test pass)."""
        return {}

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.class_scores(x)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    # --- optimization
    # ------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]] | Any:
        """What the optimizer gets; models override this for per-group LRs or weight decay."""
        return self.parameters()

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The config's optimizer over :meth:`parameter_groups` (``models/optimization.py``)."""
        return build_optimizer(self.optimizer, self.parameter_groups(), self.device)

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        if self.scheduler is None:
            return optimizer
        schedule, total_steps = build_schedule(
            self.scheduler,
            optimizer,
            lambda: self.trainer.estimated_stepping_batches,
            self._resumed_total_steps,
        )
        self._total_steps = total_steps
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
