"""The DataModules: TensorDataModule (any in-memory dataset) and MNISTDataModule (torchvision's MNIST
family)."""

from mnist_bench.data.datamodule import MNISTDataModule, TensorDataModule, TensorImages

__all__ = ["MNISTDataModule", "TensorDataModule", "TensorImages"]
