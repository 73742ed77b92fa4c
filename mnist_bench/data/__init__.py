from mnist_bench.data.datamodule import MNISTDataModule, TensorDataModule, TensorImages

__all__ = ["MNISTDataModule", "TensorDataModule", "TensorImages"]
