"""fit's remaining time for the run: in the epoch lines and beside Lightning's bar."""

import re
from types import SimpleNamespace

import pytest

from mnist_bench.callbacks.progress import RunClock

from ..conftest import ROOT


def test_the_run_clock_counts_the_epochs_left_and_the_test_pass():
    clock = RunClock()
    clock._train_start, clock._epoch_ends = 0.0, [10.0, 20.0]
    clock.val_s, clock.val_images = 1.0, 5000
    trainer = SimpleNamespace(
        max_epochs=5,
        max_steps=-1,
        num_training_batches=430,
        global_step=860,
        callbacks=[],
        limit_test_batches=1.0,
        datamodule=SimpleNamespace(test_set=[0] * 10000),
    )
    assert clock.remaining_s(trainer, now=20.0) == pytest.approx(3 * 10 + 2)  # 3 epochs of 10 s, a 2 s test
    assert clock.remaining_s(trainer, now=25.0) == pytest.approx(25 + 2), "5 s into the third epoch"
    trainer.max_steps = 1075  # half an epoch left
    assert clock.remaining_s(trainer, now=20.0) == pytest.approx(5 + 2)


def test_fit_prints_the_runs_remaining_time_after_each_epoch(tiny_fit_args, capsys):
    from mnist_bench.cli import MNISTBenchCLI

    MNISTBenchCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "cnn.yaml"),
            *tiny_fit_args,
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
        ]
    )
    out = capsys.readouterr().out
    assert re.search(r"\[cnn\] epoch 1/2 .*\(\d+\.\d s; about \d+ s left in the run\)", out)
    assert re.search(r"\[cnn\] epoch 2/2 .*\(\d+\.\d s; about \d+ s left in the run\)", out)


def test_the_progress_bar_shows_the_runs_remaining_time(tiny_fit_args, monkeypatch):
    from mnist_bench.callbacks.progress import RunProgressBar
    from mnist_bench.cli import MNISTBenchCLI

    shown = []
    own = RunProgressBar.get_metrics
    monkeypatch.setattr(
        RunProgressBar,
        "get_metrics",
        lambda self, trainer, module: shown.append(own(self, trainer, module)) or shown[-1],
    )
    args = [a for a in tiny_fit_args if "progress_bar" not in a]
    MNISTBenchCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "cnn.yaml"),
            *args,
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
        ]
    )
    assert shown and any(re.fullmatch(r"~\d+ s", str(m.get("run left"))) for m in shown), shown[-3:]
