"""Learning-rate schedules stepped once per optimizer step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosineLR(LambdaLR):
    """Linear warmup over ``warmup_pct`` of ``total_steps``, then cosine decay to ``min_lr_ratio`` × the base
    LR.

    ``total_steps`` is filled in by :class:`~mnist_bench.models.base.MNISTClassifier` from the trainer.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_pct: float = 0.05,
        min_lr_ratio: float = 0.0,
    ):
        if total_steps is None or total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= warmup_pct < 1.0:
            raise ValueError(f"warmup_pct must be in [0, 1), got {warmup_pct}")
        warmup = int(warmup_pct * total_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)
