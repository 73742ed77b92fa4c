"""Tiny synthetic MNIST-shaped IDX files, for tests and smoke runs that must go through the real loader."""

from __future__ import annotations

import os

import numpy as np

from mnist_bench.data.constants import IMAGE_SIZE, NUM_CLASSES
from mnist_bench.data.idx import raw_dir, write_idx


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k is a bright stroke whose position and angle depend on k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, k in enumerate(labels):
        angle = np.pi * k / NUM_CLASSES
        cx, cy = 14 + rng.normal(0, 1.0), 14 + rng.normal(0, 1.0)
        # distance from a line through (cx, cy) at `angle`, limited to a segment of half-length 4 + k/2
        dx, dy = xx - cx, yy - cy
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        stroke = (np.abs(across) < 1.5) & (np.abs(along) < 4 + k / 2)
        img = stroke * rng.uniform(180, 255) + rng.uniform(0, 30, size=(IMAGE_SIZE, IMAGE_SIZE))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_synthetic_mnist(data_dir: str | os.PathLike, n_train: int = 600, n_test: int = 200, seed: int = 0) -> None:
    """Write the four raw IDX files of a small synthetic MNIST into ``<data_dir>/MNIST/raw``."""
    root = raw_dir(data_dir)
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_digits(n, s)
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
