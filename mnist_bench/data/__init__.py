from mnist_bench.data.datamodule import MNISTDataModule, TensorDataModule, TensorDigits

__all__ = ["MNISTDataModule", "TensorDataModule", "TensorDigits"]
