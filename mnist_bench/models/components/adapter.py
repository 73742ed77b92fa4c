"""The input adapter every model starts with: one DataModule's batch to what a network expects."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class InputAdapter(nn.Module):
    """Adapts a normalized N×1×H×W batch to what a network expects: size (bilinear resize) and channel count.

    It runs on the device, inside the model, so one DataModule serves every model unchanged.
    """

    def __init__(self, image_size: int, in_chans: int = 1):
        super().__init__()
        self.image_size = image_size
        self.in_chans = in_chans

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        return x
