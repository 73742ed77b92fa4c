"""The command line: ``mnist-bench {fit,validate,test} --config configs/<model>.yaml``, and ``mnist-bench
data``, ``mnist-bench predict`` (image files) and ``mnist-bench export`` (ONNX).

``app`` is the LightningCLI subclass, ``rundirs`` the run folders and ``--ckpt_path``, ``loggers`` the
experiment loggers, ``main`` the entry point and its one-line errors.
"""

from mnist_bench.cli.app import MNISTBenchCLI
from mnist_bench.cli.main import main

__all__ = ["MNISTBenchCLI", "main"]
