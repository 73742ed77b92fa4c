"""The CNN: a small batch-normalized convnet, fast on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse.typing import ClosedUnitInterval, PositiveInt

from mnist_bench.errors import ConfigError
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.components.cnn import SmallCNN


class CNN(MNISTClassifier):
    """Small CNN (conv32-pool-conv64-pool-fc128-dropout-fc with batch norm) on 28-px images."""

    model_name = "cnn"
    bf16_on_cpu = True  # faster in bf16 than in fp32 where the CPU has native bf16 (docs/performance.md)

    def __init__(
        self,
        channels: Sequence[PositiveInt] = (32, 64),
        hidden: PositiveInt = 128,
        dropout: ClosedUnitInterval = 0.3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.image_size // 2 ** len(channels) < 1:
            raise ConfigError(
                f"model.channels has {len(channels)} pooling stages, which halve {self.image_size} px "
                f"to nothing. Fix: at most {self.image_size.bit_length() - 1} stages at this image_size"
            )
        self.save_hyperparameters(logger=False)
        self.net = SmallCNN(
            in_chans=self.adapt.in_chans,
            image_size=self.image_size,
            channels=tuple(channels),
            hidden=hidden,
            dropout=dropout,
            num_classes=self.num_classes,
        )
