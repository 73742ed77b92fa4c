"""mnist-bench: train and compare image classifiers on MNIST with PyTorch Lightning."""

__version__ = "0.1.0"
