"""The ViT: a Vision Transformer written from scratch (models/components/vit.py) on the shared base."""

from __future__ import annotations

from typing import Any

from jsonargparse.typing import PositiveFloat, PositiveInt

from mnist_bench.errors import ConfigError
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.components.vit import VisionTransformer


class ViT(MNISTClassifier):
    """Vision Transformer on 28-px images. ``patch_size`` must divide ``image_size`` (4 or 7 for 28 px).

    The optimizer's weight decay applies to weight matrices only; norms, biases, the class token and the
    position embeddings are kept out of it.
    """

    model_name = "vit"

    def __init__(
        self,
        patch_size: PositiveInt = 4,
        dim: PositiveInt = 128,
        depth: PositiveInt = 6,
        num_heads: PositiveInt = 4,
        mlp_ratio: PositiveFloat = 2.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if patch_size < 1 or self.image_size % patch_size:
            raise ConfigError(
                f"model.patch_size={patch_size} does not divide model.image_size={self.image_size} "
                f"(for 28 px use 4, 7 or 14)"
            )
        if dim % num_heads:
            raise ConfigError(f"model.dim={dim} is not divisible by model.num_heads={num_heads}")
        for key, value in (("drop", drop), ("attn_drop", attn_drop), ("drop_path", drop_path)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{key} must be in [0, 1), got {value}")
        self.save_hyperparameters(logger=False)
        self.net = VisionTransformer(
            image_size=self.image_size,
            patch_size=patch_size,
            in_chans=self.adapt.in_chans,
            num_classes=self.num_classes,
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop=drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
        )

    def parameter_groups(self) -> list[dict[str, Any]]:
        skip = self.net.no_weight_decay()
        decay, no_decay = [], []
        for name, param in self.net.named_parameters():
            (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
        return [
            {"params": decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
        ]
