"""The seed notebook's pipeline, the yardstick of the seed unit (su): torchvision's DataLoader with PIL
transforms, batch 64, Adam 1e-3, its CNN (conv32-pool-conv64-pool-fc128-dropout-fc10), 5 epochs over the 60k
training images, fp32."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from mnist_bench.data.datasets import MNIST as MNIST_SPEC

SEED_EPOCHS = 5  # the notebook's; this pipeline's 5-epoch training time on a machine is its seed unit (su)


def seed_notebook_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_seed_pipeline(data_dir: str, epochs: int, device: torch.device) -> float:
    """The seed notebook's training loop (batches moved to the device one by one, as there); returns its
    training seconds."""
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import MNIST

    torch.manual_seed(0)
    tf = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_SPEC.info.mean,), (MNIST_SPEC.info.std,))]
    )
    loader = DataLoader(
        MNIST(data_dir, train=True, download=False, transform=tf), batch_size=64, shuffle=True
    )
    model = seed_notebook_cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    sync(device)
    start = time.perf_counter()
    for epoch in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        sync(device)
        print(
            f"  seed pipeline: epoch {epoch + 1}/{epochs} done at {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    return time.perf_counter() - start
