"""The callbacks every run gets (the CLI adds them), one job per file."""

from mnist_bench.callbacks.figures import TestFigures
from mnist_bench.callbacks.history import EpochHistory
from mnist_bench.callbacks.predictions import TestPredictions
from mnist_bench.callbacks.progress import EpochLine, RunClock, RunProgressBar
from mnist_bench.callbacks.report import RunReport
from mnist_bench.callbacks.timing import TimingCallback

__all__ = [
    "EpochHistory",
    "EpochLine",
    "RunClock",
    "RunProgressBar",
    "RunReport",
    "TestFigures",
    "TestPredictions",
    "TimingCallback",
]
