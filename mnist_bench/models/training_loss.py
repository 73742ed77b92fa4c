"""The training loss of an epoch, kept on the device at the cost of one tensor write per step."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TrainingLossWindow(nn.Module):
    """Per-step training losses go into a window of ``size`` slots on the device; every ``size`` steps (and at
    the end of the epoch) the window is folded into the epoch's total and searched for a loss that is not
    finite.

    A step costs one tensor write and no host sync, where a torchmetrics ``MeanMetric`` update and a running
    NaN check cost about ten small ops each step (a few percent of a small CNN's step on a CPU). The exact
    step of the first non-finite loss is still known.
    """

    def __init__(self, size: int = 50):
        super().__init__()
        self.register_buffer("window", torch.zeros(size), persistent=False)
        self.register_buffer("total", torch.zeros(()), persistent=False)
        self.batch_sizes: list[int] = []  # of the steps in the window
        self.steps: list[
            int
        ] = []  # the optimizer step of each slot (several slots share one under accumulation)
        self.images = 0  # in the total

    @property
    def full(self) -> bool:
        return len(self.batch_sizes) == len(self.window)

    def add(self, loss: Tensor, batch_size: int, step: int) -> None:
        """Records a step's mean loss over ``batch_size`` images; ``step`` is the optimizer step it belongs
        to."""
        self.window[len(self.batch_sizes)] = loss.detach()
        self.batch_sizes.append(batch_size)
        self.steps.append(step)

    def fold(self) -> Tensor:
        """Adds the window to the total and empties it. Returns the step of the window's first non-finite
        loss, or -1, as a 0-dim tensor on the device (no host sync)."""
        n = len(self.batch_sizes)
        if n == 0:
            return torch.tensor(-1, device=self.window.device)
        losses = self.window[:n]
        sizes = torch.tensor(self.batch_sizes, dtype=losses.dtype, device=losses.device)
        self.total += (losses * sizes).sum()
        self.images += sum(self.batch_sizes)
        steps = torch.tensor(self.steps, device=losses.device)
        self.batch_sizes, self.steps = [], []
        slots = torch.arange(n, device=losses.device)
        first = torch.where(~torch.isfinite(losses), slots, n).min()
        return torch.where(first < n, steps[first.clamp(max=n - 1)], -1)

    def mean(self) -> Tensor:
        """The mean loss per image over the epoch so far (the window folded in first)."""
        self.fold()
        return self.total / max(self.images, 1)

    def reset(self) -> None:
        self.total.zero_()
        self.images = 0
        self.batch_sizes, self.steps = [], []
