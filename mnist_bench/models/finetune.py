"""Shared base of the ImageNet-backbone models (VGG16, AlexNet): weights, backbone LR,
freeze-then-unfreeze."""

from __future__ import annotations

from typing import Any, ClassVar

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from lightning.pytorch.callbacks import BaseFinetuning

from mnist_bench.errors import ConfigError
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.components.pretrained import ARCHS, TorchvisionBackbone, resolve_weights
from mnist_bench.models.init_args import class_and_kwargs


class FreezeThenUnfreeze(BaseFinetuning):
    """Trains only the head for ``unfreeze_at_epoch`` epochs, then the whole network.

    The backbone's parameters sit in their own optimizer group from the start (with their lower LR), frozen by
    ``requires_grad=False``, so unfreezing needs no new param group and every LR scheduler keeps working.
    """

    def __init__(self, unfreeze_at_epoch: int):
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(pl_module.net.features)

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        if epoch == self.unfreeze_at_epoch:
            self.make_trainable(pl_module.net.features)


class FinetunedClassifier(MNISTClassifier):
    """A torchvision ImageNet architecture adapted to the dataset: 1 channel, its classes.

    ``weights``: ``imagenet`` (must load, else a clear error), ``auto`` (ImageNet if the file is there, else
    random init with a loud warning), ``none``, or a path to a local ``.pth``. Whether weights were loaded is
    recorded as ``pretrained`` in metrics.json. ``backbone_lr_scale`` multiplies the LR of the pretrained
    features (the new head gets the full LR); it applies only when weights were loaded.

    Plain VGG and AlexNet have no batch norm, so they need a gentler LR (and a warmup) than BN networks.
    """

    arch: ClassVar[str]
    bf16_on_cpu = True  # both faster in bf16 where the CPU has native bf16 (results/vgg16_avx2_probe/)

    def __init__(
        self,
        weights: str = "auto",
        image_size: PositiveInt | None = None,
        hidden: PositiveInt = 256,
        dropout: ClosedUnitInterval = 0.5,
        backbone_lr_scale: float = 0.1,
        freeze_backbone_epochs: NonNegativeInt = 0,
        **kwargs: Any,
    ):
        min_size = ARCHS[self.arch][2]
        image_size = image_size or min_size  # left out: the smallest input the architecture takes
        if image_size < min_size:
            raise ConfigError(
                f"model.image_size={image_size} is too small for {self.arch}: it needs >= {min_size} px"
            )
        if not 0.0 < backbone_lr_scale <= 1.0:
            raise ConfigError(f"model.backbone_lr_scale must be in (0, 1], got {backbone_lr_scale}")
        if freeze_backbone_epochs < 0:
            raise ConfigError(f"model.freeze_backbone_epochs must be >= 0, got {freeze_backbone_epochs}")
        super().__init__(image_size=image_size, **kwargs)
        self.save_hyperparameters(logger=False)
        state_dict, self.weights_source = resolve_weights(self.arch, weights)
        self.pretrained = state_dict is not None
        self.backbone_lr_scale = backbone_lr_scale if self.pretrained else 1.0
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.net = TorchvisionBackbone(
            self.arch,
            state_dict=state_dict,
            in_chans=self.adapt.in_chans,
            hidden=hidden,
            dropout=dropout,
            num_classes=self.num_classes,
        )

    def parameter_groups(self) -> list[dict[str, Any]]:
        base_lr = class_and_kwargs(self.optimizer)[1].get("lr")
        backbone: dict[str, Any] = {"params": list(self.net.features.parameters()), "name": "backbone"}
        if base_lr is not None:
            backbone["lr"] = base_lr * self.backbone_lr_scale
        head = {"params": list(self.net.head.parameters()), "name": "head"}
        return [backbone, head]

    def configure_callbacks(self) -> list:
        return [FreezeThenUnfreeze(self.freeze_backbone_epochs)] if self.freeze_backbone_epochs > 0 else []

    def extra_metrics(self) -> dict[str, Any]:
        return {"weights": self.weights_source}
