"""The models. Importing them here lets configs use short class paths (``class_path: CNN``)."""

from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.cnn import CNN
from mnist_bench.models.schedulers import WarmupCosineLR

__all__ = ["CNN", "MNISTClassifier", "WarmupCosineLR"]
