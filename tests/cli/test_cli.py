import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_bench import cpu_memory
from mnist_bench.cli import MNISTBenchCLI, main
from mnist_bench.models import CNN
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.precision import detect, resolve

from ..conftest import CONFIGS, ROOT

CONTRACT_KEYS = [
    "model",
    "status",
    "error",
    "test/acc",
    "test/f1",
    "test/loss",
    "epochs",
    "time/fit_s",
    "time/train_s",
    "time/test_s",
    "throughput/train_img_s",
    "throughput/infer_img_s",
    "params",
    "pretrained",
    "image_size",
    "seed",
    "precision",
    "device",
    "versions",
    "git_sha",
    "config",
]


def run_dir(root: Path, model: str) -> Path:
    dirs = sorted((root / "lightning_logs" / model).glob("version_*"))
    assert dirs, f"no run dir under {root}/lightning_logs/{model}"
    return dirs[-1]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_parses_and_instantiates(config, tiny_fit_args):
    cli = MNISTBenchCLI(args=["--config", str(config), *tiny_fit_args], run=False)
    assert isinstance(cli.model, MNISTClassifier)
    assert cli.model.model_name == config.stem
    assert cli.trainer.logger.log_dir.endswith(f"lightning_logs/{config.stem}/version_0")


def test_the_run_folder_is_decided_once_and_every_writer_gets_it(tiny_fit_args, tmp_path):
    """The loggers, the checkpoints and the callbacks that write into a run all hold the one RunDir's
    folder."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mnist_bench.callbacks import RunReport, TestPredictions
    from mnist_bench.cli.app import SaveConfigToRunDir
    from mnist_bench.cli.rundirs import RunDir

    (tmp_path / "lightning_logs" / "cnn" / "version_3").mkdir(parents=True)
    cli = MNISTBenchCLI(
        args=["--config", str(ROOT / "configs/cnn.yaml"), *tiny_fit_args, "--logger=tensorboard,csv"],
        run=False,
    )
    assert cli.run == RunDir(tmp_path, "cnn", 4)
    folder = tmp_path / "lightning_logs" / "cnn" / "version_4"
    assert cli.run.path == folder and cli.run.checkpoints == folder / "checkpoints"
    assert [Path(logger.log_dir) for logger in cli.trainer.loggers] == [folder, folder]
    callbacks = cli.trainer.callbacks
    assert [Path(cb.dirpath) for cb in callbacks if isinstance(cb, ModelCheckpoint)] == [
        folder / "checkpoints"
    ]
    writers = [cb for cb in callbacks if isinstance(cb, (RunReport, TestPredictions, SaveConfigToRunDir))]
    assert len(writers) == 3 and all(cb.run_dir == folder for cb in writers)


def test_fast_dev_run_through_main(tiny_fit_args, tmp_path):
    main(["fit", "--config", str(ROOT / "configs/cnn.yaml"), "--trainer.fast_dev_run=true", *tiny_fit_args])
    metrics = json.loads((run_dir(tmp_path, "cnn") / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 1


@pytest.fixture(scope="module")
def cnn_run(synthetic_data, tmp_path_factory) -> Path:
    """One real (tiny) fit + test of the CNN config on synthetic data; returns its run dir."""
    root = tmp_path_factory.mktemp("cnn_run")
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={synthetic_data}",
            "--data.val_size=100",
            "--data.eval_batch_size=50",
            f"--trainer.default_root_dir={root}",
            "--trainer.max_epochs=3",
            "--trainer.enable_progress_bar=false",
            "--seed_everything=7",
        ]
    )
    return run_dir(root, "cnn")


def test_the_row_schema_declares_the_design_contract():
    from mnist_bench.benchmark.report.row import CONTRACT

    assert sorted(CONTRACT) == sorted(CONTRACT_KEYS)


def test_metrics_json_holds_the_contract(cnn_run):
    m = json.loads((cnn_run / "metrics.json").read_text())
    missing = [k for k in CONTRACT_KEYS if k not in m]
    assert not missing, missing
    assert m["model"] == "cnn" and m["status"] == "ok" and m["error"] is None
    assert 0.5 <= m["test/acc"] <= 1.0, "the synthetic strokes are easy: 3 epochs must learn them"
    assert 0.0 <= m["test/f1"] <= 1.0 and m["test/loss"] > 0
    assert m["epochs"] == 3 and len(m["history"]) == 3
    assert [row["epoch"] for row in m["history"]] == [0, 1, 2]
    assert all(row["val/acc"] is not None and row["train/loss"] is not None for row in m["history"])
    assert 0 < m["time/train_s"] < m["time/fit_s"]
    assert m["time/test_s"] > 0
    assert m["throughput/train_img_s"] == pytest.approx(3 * 500 / m["time/train_s"], rel=0.01)
    # (test_s is stored to the millisecond, and this test pass takes only milliseconds)
    assert m["throughput/infer_img_s"] == pytest.approx(200 / m["time/test_s"], rel=0.1)
    assert m["params"] == 421_866 and m["pretrained"] is False and m["image_size"] == 28
    assert m["seed"] == 7 and m["device"].startswith("cpu")
    assert (
        m["precision"] == resolve(None, detect("cpu"), CNN.bf16_on_cpu)[0]
        and m["hardware"] == detect("cpu").name
    )
    assert m["versions"]["torch"] and m["versions"]["lightning"]
    assert m["cpu_memory"] == cpu_memory.state()  # what the fit's process used
    if sys.platform.startswith("linux") and os.environ.get(cpu_memory.VARIABLE) != "0":
        assert m["cpu_memory"] == "freed memory kept (glibc mallopt)"
    assert m["config"]["model"]["class_path"].endswith("CNN")
    assert (cnn_run / "config.yaml").is_file()
    assert (cnn_run / "checkpoints" / "last.ckpt").is_file()


def test_tensorboard_has_scalars_images_and_hparams(cnn_run):
    scalars, images, tags_seen = set(), set(), set()
    for event_file in cnn_run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars |= set(tags["scalars"])
        images |= set(tags["images"])
        tags_seen |= set(tags.get("tensors", []))
        if "test/acc" in tags["scalars"]:
            assert 0 <= acc.Scalars("test/acc")[-1].value <= 1
    for stage in ("train", "val"):
        assert {f"{stage}/loss", f"{stage}/acc", f"{stage}/f1"} <= scalars
    assert {"test/acc", "test/f1", "test/loss", "hparams/acc"} <= scalars
    assert {"test/confusion_matrix", "test/predictions"} <= images
    for png in ("confusion_matrix.png", "predictions.png", "misclassified.png"):
        assert (cnn_run / png).stat().st_size > 5_000


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_bench", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "bad, key",
    [("--trainer.max_epochs=oops", "trainer.max_epochs"), ("--trainer.max_epoch=3", "max_epoch")],
    ids=["wrong-type", "misspelt-key"],
)
def test_bad_arguments_exit_2_with_one_line_and_no_traceback(bad, key, tmp_path):
    proc = _cli("fit", "--config", str(ROOT / "configs/cnn.yaml"), bad, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("mnist-bench: config error:") and key in first


def test_missing_data_is_one_clear_error(tmp_path):
    proc = _cli(
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        "--data.data_dir=nowhere",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "mnist-bench data --data_dir nowhere" in proc.stderr


def test_misspelt_key_in_a_config_file_is_named(tmp_path):
    text = (ROOT / "configs/cnn.yaml").read_text().replace("hidden: 128", "hiden: 128")
    assert "hiden" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = _cli("fit", "--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "hiden" in proc.stderr.splitlines()[0]


def test_the_results_table_shows_names_as_they_are(cnn_run, tmp_path, capsys):
    from types import SimpleNamespace

    from mnist_bench.callbacks import RunReport

    report = RunReport(tmp_path, {})
    report.metrics = {
        **json.loads((cnn_run / "metrics.json").read_text()),
        "model": "[/b]cnn",
        "device": "[red]cpu",
        "run_dir": "runs/[bold]x",
    }
    cli = SimpleNamespace(trainer=SimpleNamespace(callbacks=[report], is_global_zero=True, loggers=[]))
    MNISTBenchCLI._print_result(cli)
    out = capsys.readouterr().out
    assert "mnist-bench: [/b]cnn on [red]cpu" in out and "[/b]cnn" in out.split("\n", 2)[-1]
    assert "runs/[bold]x" in out


@pytest.mark.parametrize(
    "subcommand, hook",
    [("fit", "on_train_batch_start"), ("test", "on_test_start"), ("validate", "on_validation_start")],
)
def test_ctrl_c_exits_130_with_how_to_go_on(subcommand, hook, tiny_fit_args, tmp_path, monkeypatch, capsys):
    import signal

    from mnist_bench.callbacks import TimingCallback

    original = getattr(TimingCallback, hook)

    def ctrl_c(self, trainer, *args):
        original(self, trainer, *args)
        if subcommand != "fit" or trainer.current_epoch == 1:  # fit: once the first epoch is checkpointed
            raise KeyboardInterrupt

    monkeypatch.setattr(TimingCallback, hook, ctrl_c)
    args = [
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        *tiny_fit_args,
        "--data.batch_size=100",
        "--trainer.max_epochs=2",
    ]
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            main([subcommand, *args])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnist-bench: interrupted (Ctrl-C)"), last
    if subcommand != "fit":
        assert "rerun the same command" in last, last
        return
    assert "--ckpt_path last" in last, last
    stopped_run = json.loads((run_dir(tmp_path, "cnn") / "metrics.json").read_text())
    assert stopped_run["status"] == "interrupted" and stopped_run["error"] == "interrupted (Ctrl-C)", (
        stopped_run
    )
    monkeypatch.undo()
    main(["fit", *args, "--ckpt_path=last"])
    metrics = json.loads((run_dir(tmp_path, "cnn") / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 2


def test_a_real_ctrl_c_mid_fit_exits_130(synthetic_data, tmp_path):
    import signal
    import time

    run = tmp_path / "lightning_logs/cnn/version_0"
    cmd = [
        sys.executable,
        "-m",
        "mnist_bench",
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={synthetic_data}",
        "--data.val_size=100",
        "--trainer.max_epochs=1000",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    # SIGINT as from a terminal (a test runner in the background may have it ignored, and Python keeps that)
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    last_ckpt = run / "checkpoints/last.ckpt"
    while not last_ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnist-bench: interrupted (Ctrl-C); ") and last.endswith("--ckpt_path last"), last
