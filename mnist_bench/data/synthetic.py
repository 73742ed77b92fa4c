"""Tiny synthetic IDX files shaped like a dataset's, for tests and smoke runs that must go through the real
loader."""

from __future__ import annotations

import os

import numpy as np

from mnist_bench.data.datasets import DEFAULT_DATASET, dataset_spec
from mnist_bench.data.idx import idx_layout, raw_dir, write_idx

IMAGE_SIZE = 28


def synthetic_digits(n: int, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake 28-px images: class k is a bright stroke whose position and angle depend on k, plus
    noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, k in enumerate(labels):
        angle = np.pi * k / num_classes
        cx, cy = 14 + rng.normal(0, 1.0), 14 + rng.normal(0, 1.0)
        # distance from a line through (cx, cy) at `angle`, limited to a segment of half-length 4 + k/2
        dx, dy = xx - cx, yy - cy
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        stroke = (np.abs(across) < 1.5) & (np.abs(along) < 4 + k / 2)
        img = stroke * rng.uniform(180, 255) + rng.uniform(0, 30, size=(IMAGE_SIZE, IMAGE_SIZE))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_synthetic_mnist(
    data_dir: str | os.PathLike,
    n_train: int = 600,
    n_test: int = 200,
    seed: int = 0,
    dataset: str = DEFAULT_DATASET,
) -> None:
    """Write the four raw IDX files of a small synthetic ``dataset`` in its own layout and names into e.g.
    ``<data_dir>/MNIST/raw`` (labels as N×8 int32 where the dataset's are, as QMNIST's)."""
    spec = dataset_spec(dataset)
    root = raw_dir(data_dir, dataset)
    for train, n, s in ((True, n_train, seed), (False, n_test, seed + 1)):
        images, labels = synthetic_digits(n, s, spec.info.num_classes)
        images_name, labels_name = spec.split_files(train)
        if idx_layout(labels_name)[0] == 2:  # the class first, then columns of provenance
            labels = np.column_stack([labels, np.arange(n), np.zeros((n, 6), dtype=np.int64)])
        write_idx(root / images_name, images)
        write_idx(root / labels_name, labels)
