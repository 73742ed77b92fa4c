"""The training options a Lightning user expects, from config, on synthetic data: torch.compile, EMA weights,
the best checkpoint tested, early stopping, the LR finder, gradient clipping and accumulation with every
model."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from mnist_bench.cli import MNISTBenchCLI, main

from ..conftest import CONFIGS, ROOT

CNN_CONFIG = str(ROOT / "configs" / "cnn.yaml")
# a CNN small enough to compile and train in seconds
SMALL_CNN = ["--model.init_args.channels=[8]", "--model.init_args.hidden=16"]
EMA = ["--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay=0.5"]


def run_dir(root: Path, model: str = "cnn") -> Path:
    return sorted((root / "lightning_logs" / model).glob("version_*"))[-1]


def metrics(root: Path, model: str = "cnn") -> dict:
    return json.loads((run_dir(root, model) / "metrics.json").read_text())


def fit(tiny_fit_args, *args: str) -> None:
    main(["fit", "--config", CNN_CONFIG, *tiny_fit_args, "--data.batch_size=50", *SMALL_CNN, *args])


# --- torch.compile
# ------------------------------------------------------------------------------------------------
def test_compile_trains_records_it_and_its_checkpoint_loads_uncompiled(tiny_fit_args, tmp_path):
    from mnist_bench.models import CNN

    fit(
        tiny_fit_args,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--model.init_args.compile=true",
    )
    m = metrics(tmp_path)
    assert m["status"] == "ok" and m["compile"] == "default" and m["test/acc"] is not None
    ckpt = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("_orig_mod" in key for key in ckpt["state_dict"]), "compiled in place: the names stay"
    plain = CNN.load_from_checkpoint(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert getattr(plain.net, "_compiled_call_impl", None) is None
    x = torch.randn(4, 1, 28, 28)
    assert plain.eval()(x).shape == (4, 10)


def test_compile_off_is_recorded_and_a_bad_mode_is_a_config_error(tiny_fit_args, tmp_path, capsys):
    fit(tiny_fit_args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    assert metrics(tmp_path)["compile"] is False
    with pytest.raises(SystemExit) as exit_info:
        fit(tiny_fit_args, "--model.init_args.compile_mode=fastest")
    assert exit_info.value.code == 2 and "compile_mode" in capsys.readouterr().err


# --- EMA
# ------------------------------------------------------------------------------------------------------------
def test_ema_validates_and_tests_the_averaged_weights_and_resume_keeps_both(tiny_fit_args, tmp_path):
    no_schedule = "--model.init_args.scheduler=null"  # so that the resumed run may train longer
    fit(tiny_fit_args, "--trainer.max_epochs=1", no_schedule, *EMA)
    m = metrics(tmp_path)
    assert m["status"] == "ok" and m["weight_averaging"] == ["EMAWeightAveraging"]
    ckpt_path = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == current.keys() and "n_averaged" in ckpt["averaging_state"]
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged), (
        "the average differs from the weights"
    )
    # the closing test scored the averaged weights: the same accuracy as testing the checkpoint's state_dict
    # gives
    cli = MNISTBenchCLI(
        args=["test", "--config", CNN_CONFIG, *tiny_fit_args, *SMALL_CNN, f"--ckpt_path={ckpt_path}"]
    )
    assert cli.trainer.callback_metrics["test/acc"] == pytest.approx(m["test/acc"])
    # resuming continues both the weights and their average
    steps_before = int(ckpt["averaging_state"]["n_averaged"])
    fit(tiny_fit_args, "--trainer.max_epochs=2", no_schedule, *EMA, "--ckpt_path=last")
    resumed_run = ckpt_path.parent.parent  # the fit continued in its own folder (the test above made another)
    resumed = torch.load(resumed_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(resumed["averaging_state"]["n_averaged"]) == 2 * steps_before
    assert json.loads((resumed_run / "metrics.json").read_text())["epochs"] == 2


# --- best checkpoint and early stopping
# -----------------------------------------------------------------------------
def script_val_acc(model, values) -> None:
    """Makes ``model`` log ``values[epoch]`` as its val/acc, so that which epoch is best is known in
    advance."""
    import types

    original = model.log_dict

    def log_dict(self, logged, *args, **kwargs):
        if "val/acc" in logged and not self.trainer.sanity_checking:
            logged = {**logged, "val/acc": torch.tensor(values[self.current_epoch])}
        return original(logged, *args, **kwargs)

    model.log_dict = types.MethodType(log_dict, model)


def test_test_weights_best_tests_the_best_epoch_and_says_so(tiny_fit_args, tmp_path):
    cli = MNISTBenchCLI(
        args=[
            "--config",
            CNN_CONFIG,
            *tiny_fit_args,
            "--data.batch_size=50",
            *SMALL_CNN,
            "--trainer.max_epochs=3",
            "--test_weights=best",
        ],
        run=False,
    )
    script_val_acc(cli.model, [0.5, 0.9, 0.7])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = next((run_dir(tmp_path) / "checkpoints").glob("best-*.ckpt"))
    assert ckpt.name == "best-epoch=1.ckpt"
    best = torch.load(ckpt, weights_only=True)["state_dict"]
    cli.after_fit()
    assert all(torch.equal(best[k], v.cpu()) for k, v in cli.model.state_dict().items() if k in best)
    tested = metrics(tmp_path)["tested_weights"]
    assert tested["which"] == "best" and tested["epoch"] == 1 and tested["score"] == pytest.approx(0.9)
    assert tested["monitor"] == "val/acc" and len(metrics(tmp_path)["history"]) == 3, (
        "the history is the whole run's"
    )


def test_a_misspelt_best_monitor_stops_before_the_first_epoch(tiny_fit_args, tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit(tiny_fit_args, "--test_weights=best", "--best_monitor=val/acc_")
    assert "best_monitor 'val/acc_'" in capsys.readouterr().err
    assert not list(run_dir(tmp_path).glob("checkpoints/*.ckpt")), (
        "refused at the sanity check, before any epoch"
    )
    assert not metrics(tmp_path)["history"], "no epoch trained"


def test_the_best_checkpoint_keeps_model_checkpoint_s_state_key_and_knows_which_way_is_better():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mnist_bench.callbacks.best import BestCheckpoint

    kwargs = {
        "filename": "best-{epoch}",
        "save_top_k": 1,
        "save_last": False,
        "save_on_train_epoch_end": False,
    }
    # checkpoints written with a plain ModelCheckpoint resume with their best so far
    assert (
        BestCheckpoint("val/acc", **kwargs).state_key
        == ModelCheckpoint(monitor="val/acc", mode="max", **kwargs).state_key
    )
    modes = {
        m: BestCheckpoint(m).mode for m in ("val/acc", "val/f1", "val/iou", "val/loss", "val/fallback_rate")
    }
    assert modes == {
        "val/acc": "max",
        "val/f1": "max",
        "val/iou": "max",
        "val/loss": "min",
        "val/fallback_rate": "min",
    }


def test_the_default_tests_the_last_epoch(tiny_fit_args, tmp_path):
    fit(tiny_fit_args, "--trainer.max_epochs=2")
    assert metrics(tmp_path)["tested_weights"] == {"which": "last", "epoch": 1}
    assert not list((run_dir(tmp_path) / "checkpoints").glob("best-*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--test_weights=best", "--trainer.limit_val_batches=0"], "limit_val_batches is 0"),
        (["--test_weights=best", "--best_monitor=train/loss"], "validation metric"),
        (["--test_weights=newest"], "test_weights"),
        (
            ["--test_weights=best", "--best_monitor=val/accuracy"],
            "'val/accuracy' is not a metric this model logs on validation (val/acc, val/f1, val/loss)",
        ),
    ],
)
def test_a_best_checkpoint_that_cannot_be_chosen_is_refused(args, message, tiny_fit_args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit(tiny_fit_args, *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_early_stopping_from_config_stops_and_metrics_json_says_when(tiny_fit_args, tmp_path):
    fit(
        tiny_fit_args,
        "--trainer.max_epochs=5",
        "--trainer.callbacks+=EarlyStopping",
        "--trainer.callbacks.monitor=val/acc",
        "--trainer.callbacks.mode=max",
        "--trainer.callbacks.stopping_threshold=0.0",
    )  # any accuracy reaches it: stop after the first epoch
    m = metrics(tmp_path)
    assert m["status"] == "ok" and m["epochs"] == 1 and m["test/acc"] is not None
    assert m["early_stopping"]["stopped"] and m["early_stopping"]["stopped_epoch"] == 0
    assert m["early_stopping"]["monitor"] == "val/acc"


# --- gradient clipping and accumulation, every model
# ----------------------------------------------------------------
class GradientRecorder(Callback):
    """The total gradient norm each optimizer step used (read just after the step: Lightning clips inside the
    step's closure, after backward), and how many steps ran."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module):
        def record(optimizer, args, kwargs):
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        trainer.optimizers[0].register_step_post_hook(record)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_gradient_clipping_and_accumulation_work_with_every_model(config, tiny_fit_args):
    cli = MNISTBenchCLI(
        args=[
            "--config",
            str(config),
            *tiny_fit_args,
            "--data.batch_size=20",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=6",
            "--trainer.limit_val_batches=1",
            "--trainer.gradient_clip_val=0.05",
            "--trainer.accumulate_grad_batches=2",
        ],
        run=False,
    )
    recorder = GradientRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3 and len(recorder.norms) == 3, "6 batches, 2 per optimizer step"
    assert max(recorder.norms) <= 0.05 * 1.001, recorder.norms
    assert cli.model._total_steps in (None, 3), (
        "a step-counting schedule plans the optimizer steps, not batches"
    )


def test_a_nan_under_accumulation_names_the_optimizer_step(tiny_fit_args, tmp_path):
    from mnist_bench.models.base import DivergenceError

    from ..models.test_models import PoisonedCNN

    cli = MNISTBenchCLI(
        args=[
            "--config",
            CNN_CONFIG,
            *tiny_fit_args,
            "--data.batch_size=20",
            "--trainer.max_epochs=1",
            "--trainer.accumulate_grad_batches=4",
        ],
        run=False,
    )
    poisoned = PoisonedCNN(dataset=cli.model.dataset.as_dict())
    with pytest.raises(DivergenceError, match="step 2"):
        cli.trainer.fit(poisoned, datamodule=cli.datamodule)


# --- LR finder
# ------------------------------------------------------------------------------------------------------
def test_lr_find_prints_a_suggestion_and_writes_its_plot(tiny_fit_args, tmp_path, capsys):
    main(
        [
            "lr-find",
            "--config",
            CNN_CONFIG,
            *tiny_fit_args,
            "--data.batch_size=20",
            *SMALL_CNN,
            "--num_training=30",
            "--min_lr=1e-5",
            "--max_lr=10",
        ]
    )
    out = capsys.readouterr().out
    assert "suggested learning rate" in out and "--model.init_args.scheduler.init_args.max_lr=" in out
    folder = run_dir(tmp_path)
    record = json.loads((folder / "lr_find.json").read_text())
    assert record["suggestion"] > 0 and 10 <= record["steps_run"] <= 30 and record["model"] == "cnn"
    assert (folder / "lr_find.png").stat().st_size > 5_000
    assert not list(tmp_path.glob(".lr_find_*.ckpt")), "the finder's temporary checkpoint is removed"
    assert not (folder / "checkpoints").exists() and not (folder / "metrics.json").exists(), (
        "nothing trained for good"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min_lr=1", "--max_lr=0.1"], "--min_lr"),
        (["--num_training=3"], "--num_training"),
    ],
)
def test_lr_find_refuses_a_range_it_cannot_test(args, message, tiny_fit_args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", "--config", CNN_CONFIG, *tiny_fit_args, *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_range_test_s_smoothing_is_unbiased():
    """A constant loss must read constant: Lightning's running average divided one step too many reads it
    about halved at the first step."""
    from types import SimpleNamespace

    from mnist_bench.cli.lr_find import unbias_smoothing

    beta, avg, losses = 0.98, 0.0, []
    for step in range(1, 40):  # as Lightning computes it: global_step already counted up
        avg = beta * avg + (1 - beta) * 2.3
        losses.append(avg / (1 - beta ** (step + 1)))
    assert losses[0] == pytest.approx(1.16, abs=0.01)
    finder = SimpleNamespace(results={"lr": list(range(39)), "loss": losses})
    assert unbias_smoothing(finder)
    assert finder.results["loss"] == pytest.approx([2.3] * 39)


def test_the_suggestion_is_the_steepest_fall_per_decade_not_noise_at_tiny_rates():
    import numpy as np

    from mnist_bench.cli.lr_find import steepest_per_decade

    lrs = list(np.logspace(-6, 0, 100))
    rng = np.random.default_rng(0)
    # flat with a little noise, then a fall centred on 1e-3, as the CNN's range test reads
    losses = [2.35 - 1.0 / (1 + np.exp(-3 * (np.log10(lr) + 3))) + rng.normal(0, 0.004) for lr in lrs]
    suggestion = steepest_per_decade(lrs, losses)
    assert 3e-4 < suggestion < 3e-3
    slope_per_rate = np.gradient(np.array(losses[10:-1]), np.array(lrs[10:-1]))
    assert lrs[10 + int(np.argmin(slope_per_rate))] < 1e-4, (
        "against the rate itself, noise at tiny rates wins"
    )


def test_a_batch_of_one_image_is_skipped_by_a_batchnorm_model(tiny_fit_args, tmp_path):
    # 51 training images in batches of 50: each epoch's second batch holds one image, which BatchNorm1d
    # refuses
    with pytest.warns(UserWarning, match="a training batch of one image is skipped"):
        fit(tiny_fit_args, "--trainer.max_epochs=2", "--data.train_subset=51")
    m = metrics(tmp_path)  # before: "Expected more than 1 value per channel when training" and a traceback
    assert m["status"] == "ok" and len(m["history"]) == 2 and m["test/images"] == 200


def test_a_batch_size_of_one_is_refused_for_a_batchnorm_model_and_an_epoch_that_trained_nothing_fails(
    tiny_fit_args, tmp_path, capsys
):
    from mnist_bench.errors import ConfigError
    from mnist_bench.models import CNN

    with pytest.raises(SystemExit) as exit_info:
        fit(tiny_fit_args, "--data.batch_size=1")
    assert exit_info.value.code == 2 and "data.batch_size 1" in capsys.readouterr().err
    model = CNN()  # e.g. one image per device under DDP: every batch of the epoch skipped
    model._skipped_batches, model._trained_batches = 3, 0
    with pytest.raises(ConfigError, match="no batch of epoch 0 trained"):
        model.on_train_epoch_end()
