"""A small, fast convolutional network for 28-px digits."""

from __future__ import annotations

from torch import nn


def conv_pool_bn_relu(in_ch: int, out_ch: int, kernel: int = 3) -> list[nn.Module]:
    # Pooling straight after the conv (max-pool and ReLU commute) runs batch norm and ReLU on a quarter of the
    # activations that conv-BN-ReLU-pool would give them.
    return [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """conv-pool-BN-ReLU stages, then a BN'd hidden layer with dropout and a linear head.

    With the defaults this is the seed lab's network (conv32-pool-conv64-pool-fc128-dropout-fc10) plus batch
    norm.
    """

    def __init__(
        self,
        in_chans: int = 1,
        image_size: int = 28,
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.3,
        num_classes: int = 10,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_chans
        for out in channels:
            layers += conv_pool_bn_relu(ch, out)
            ch = out
        side = image_size // 2 ** len(channels)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * side * side, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))
