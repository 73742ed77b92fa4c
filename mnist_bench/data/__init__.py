from mnist_bench.data.datamodule import MNISTDataModule

__all__ = ["MNISTDataModule"]
