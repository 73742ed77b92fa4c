"""Every way a checkpoint reaches the CLI loads it as tensors and plain data, and `last` means the newest
checkpoint of the model for every subcommand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from ..conftest import ROOT
from .test_resume import _Payload


def _cli(args, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "mnist_bench", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def _cnn_args(data, root, *extra: str) -> list[str]:
    """configs/cnn.yaml on the synthetic data, writing under root, quietly."""
    return [
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={data}",
        "--data.val_size=100",
        "--data.eval_batch_size=100",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


def _plant_payload(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": {"x": _Payload(marker)},
        },
        path,
    )


@pytest.mark.parametrize("subcommand", ["fit", "test", "validate"])
def test_a_config_cannot_turn_weights_only_off(subcommand, synthetic_data, tmp_path):
    """The reproduced attack: a planted last.ckpt whose pickle runs code, and a config with ckpt_path: last,
    weights_only: false and a default_root_dir that points at it."""
    marker = tmp_path / "payload-ran"
    _plant_payload(tmp_path / "lightning_logs/cnn/version_0/checkpoints/last.ckpt", marker)
    config = yaml.safe_load((ROOT / "configs/cnn.yaml").read_text())
    config.update(ckpt_path="last", weights_only=False)
    config["trainer"]["default_root_dir"] = str(tmp_path)
    config["data"]["data_dir"] = str(synthetic_data)
    evil = tmp_path / "evil.yaml"
    evil.write_text(yaml.safe_dump(config))
    for args in (
        ["--config", str(evil)],
        ["--config", str(evil), "--weights_only=true", "--weights_only=false"],
        [
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.data_dir={synthetic_data}",
            "--ckpt_path=last",
            "--weights_only=null",
        ],
    ):
        proc = _cli([subcommand, *args], tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("mnist-bench: config error: weights_only cannot be turned off"), lines[-1]
        assert "Traceback" not in proc.stderr
        assert not marker.exists(), "the checkpoint's payload ran"


@pytest.mark.parametrize("subcommand", ["fit", "test", "validate"])
def test_last_with_a_payload_checkpoint_is_refused_on_every_subcommand(subcommand, synthetic_data, tmp_path):
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "lightning_logs/cnn/version_3/checkpoints/last.ckpt"
    _plant_payload(planted, marker)
    proc = _cli(
        [
            subcommand,
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={synthetic_data}",
            "--data.val_size=100",
            f"--trainer.default_root_dir={tmp_path}",
            "--ckpt_path=last",
        ],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mnist-bench: checkpoint {planted} refused") and "Traceback" not in proc.stderr
    assert not marker.exists(), "the checkpoint's payload ran"


@pytest.mark.parametrize("value", ["best", "hpc", "registry"])
def test_checkpoint_names_this_project_does_not_write_are_one_line(value, tmp_path, synthetic_data):
    proc = _cli(
        [
            "test",
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={synthetic_data}",
            f"--ckpt_path={value}",
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"mnist-bench: config error: --ckpt_path {value} is not")
    )


def test_fit_for_zero_epochs_is_refused(tmp_path, synthetic_data):
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        proc = _cli(
            [
                "fit",
                "--config",
                str(ROOT / "configs/cnn.yaml"),
                f"--data.data_dir={synthetic_data}",
                f"--trainer.{key}=0",
            ],
            tmp_path,
        )
        assert proc.returncode == 2, proc.stderr[-1000:]
        assert "trains nothing" in proc.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "lightning_logs").exists()


def test_test_and_validate_last_use_the_newest_trained_checkpoint(synthetic_data, tmp_path):
    from mnist_bench.cli import main

    args = _cnn_args(synthetic_data, tmp_path)
    main(["fit", *args, "--trainer.max_epochs=2", "--model.init_args.hidden=64"])  # not the config's 128
    trained = json.loads((tmp_path / "lightning_logs/cnn/version_0/metrics.json").read_text())
    main(["test", *args, "--ckpt_path=last"])
    tested = json.loads((tmp_path / "lightning_logs/cnn/version_1/metrics.json").read_text())
    # built from the checkpoint's hyperparameters, the same weights on the same test images: the same score (a
    # fresh model scores about 0.1)
    assert tested["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6) and trained["test/acc"] > 0.5
    assert tested["test/images"] == trained["test/images"] == 200
    assert (
        json.loads((tmp_path / "lightning_logs/cnn/version_0/metrics.json").read_text()) == trained
    )  # untouched
    # the tested checkpoint's history comes with it: its epochs are the trained run's
    assert tested["epochs"] == trained["epochs"] == 2 and tested["history"] == trained["history"]
    assert all("train/loss" in row and "val/acc" in row for row in trained["history"])
    main(["validate", *args, "--ckpt_path=last"])
    assert (tmp_path / "lightning_logs/cnn/version_2").is_dir()


def test_a_checkpoint_with_the_older_history_key_resumes_with_its_history(synthetic_data, tmp_path):
    """Checkpoints written when the model kept the history (``mnist_bench_history``) resume and test with
    it."""
    from mnist_bench.callbacks.history import LEGACY_KEY, EpochHistory
    from mnist_bench.cli import main

    args = _cnn_args(synthetic_data, tmp_path, "--model.init_args.scheduler=null")
    main(["fit", *args, "--trainer.max_epochs=1"])
    run = tmp_path / "lightning_logs/cnn/version_0"
    last = (run / "checkpoints/last.ckpt").resolve()
    ckpt = torch.load(last, weights_only=True)
    rows = ckpt["callbacks"][EpochHistory.__qualname__]["rows"]
    assert [sorted(row) for row in rows] == [
        ["epoch", "train/acc", "train/f1", "train/loss", "val/acc", "val/f1", "val/loss"]
    ], "the epoch's checkpoint holds the whole epoch"
    ckpt[LEGACY_KEY] = ckpt["callbacks"].pop(EpochHistory.__qualname__)["rows"]
    torch.save(ckpt, last)
    main(["test", *args, "--ckpt_path=last"])
    assert json.loads((tmp_path / "lightning_logs/cnn/version_1/metrics.json").read_text())["epochs"] == 1
    main(["fit", *args, "--trainer.max_epochs=2", f"--ckpt_path={run}"])
    assert [row["epoch"] for row in json.loads((run / "metrics.json").read_text())["history"]] == [0, 1]


def test_a_run_dir_is_a_ckpt_path_as_for_predict_and_export(synthetic_data, tmp_path):
    from mnist_bench.cli import main

    # a constant rate: the resumed fit may run longer than planned
    args = _cnn_args(synthetic_data, tmp_path, "--model.init_args.scheduler=null")
    run = tmp_path / "lightning_logs/cnn/version_0"
    main(["fit", *args, "--trainer.max_epochs=1"])
    main(["test", *args, f"--ckpt_path={run}"])
    tested = json.loads((tmp_path / "lightning_logs/cnn/version_1/metrics.json").read_text())
    assert tested["tested_weights"]["checkpoint"] == str(run / "checkpoints/last.ckpt")
    assert tested["test/acc"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test/acc"], abs=1e-6
    )
    main(["fit", *args, "--trainer.max_epochs=2", f"--ckpt_path={run}"])  # goes on in that run's folder
    resumed = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in resumed["history"]] == [0, 1]
    assert not (tmp_path / "lightning_logs/cnn/version_2").exists()
    # reached through a link named like another run, or by its checkpoints/ folder: still that run's folder
    (tmp_path / "links").mkdir()
    (tmp_path / "links/version_1").symlink_to(run)
    tested_before = (tmp_path / "lightning_logs/cnn/version_1/metrics.json").read_text()
    main(["fit", *args, "--trainer.max_epochs=3", f"--ckpt_path={tmp_path / 'links/version_1'}"])
    main(["fit", *args, "--trainer.max_epochs=4", f"--ckpt_path={run / 'checkpoints'}"])
    assert [row["epoch"] for row in json.loads((run / "metrics.json").read_text())["history"]] == [0, 1, 2, 3]
    assert (tmp_path / "lightning_logs/cnn/version_1/metrics.json").read_text() == tested_before
    assert not (tmp_path / "lightning_logs/cnn/version_2").exists()
    proc = _cli(
        ["test", *args, f"--ckpt_path={tmp_path}"], tmp_path
    )  # a folder without checkpoints/last.ckpt
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-1000:]
    assert f"checkpoint {tmp_path}/checkpoints/last.ckpt not found" in proc.stderr.strip().splitlines()[-1]


def test_an_accepted_resume_writes_its_config_before_training(synthetic_data, tmp_path, monkeypatch):
    from mnist_bench.cli import main
    from mnist_bench.models.base import MNISTClassifier

    args = _cnn_args(synthetic_data, tmp_path, "--model.init_args.scheduler=null")
    main(["fit", *args, "--trainer.max_epochs=1"])
    config = tmp_path / "lightning_logs/cnn/version_0/config.yaml"

    def interrupt(self):  # Ctrl-C as the resumed run's first epoch starts: no closing test pass
        raise KeyboardInterrupt

    monkeypatch.setattr(MNISTClassifier, "on_train_epoch_start", interrupt)
    with pytest.raises(SystemExit):
        main(["fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert "max_epochs: 2" in config.read_text(), "the resumed run's settings, written once it was accepted"


@pytest.mark.parametrize("subcommand", ["test", "validate"])
def test_last_without_a_checkpoint_is_one_line(subcommand, synthetic_data, tmp_path):
    proc = _cli(
        [
            subcommand,
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={synthetic_data}",
            "--ckpt_path=last",
        ],
        tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"mnist-bench: nothing to {subcommand}: no ")


def test_a_partial_test_is_counted_and_marked(synthetic_data, tmp_path):
    from mnist_bench.benchmark.report.table import markdown_table, test_set_note
    from mnist_bench.cli import main

    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={synthetic_data}",
            "--data.val_size=100",
            "--data.eval_batch_size=50",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.limit_test_batches=2",
            "--trainer.enable_progress_bar=false",
        ]
    )
    m = json.loads((tmp_path / "lightning_logs/cnn/version_0/metrics.json").read_text())
    assert m["test/images"] == 100 and m["test/full_images"] == 200 and m["val/images"] == 100
    md = markdown_table([m])
    assert "100 of 200 (partial)" in md
    assert "scored on part of the test set: cnn" in test_set_note([m])
    assert m["test/official"] is False, "200 test images are not MNIST's published 10,000"
    assert "(unofficial)" in md and "not the published test set" in test_set_note([m])


def test_only_the_published_test_files_are_official():
    from mnist_bench.data.idx import official_split

    published = {"t10k-images-idx3-ubyte": (10_000, 28, 28), "t10k-labels-idx1-ubyte": (10_000,)}
    assert official_split(published, "mnist", train=False)
    for name in published:  # the t10k files cut to 9,999 images (or one of them)
        cut = {**published, name: (9_999, *published[name][1:])}
        assert official_split(cut, "mnist", train=False) is False
    # KMNIST publishes no md5: a test set of its published count cannot be told from another, so it is unknown
    kmnist = {"t10k-images-idx3-ubyte": (10_000, 28, 28), "t10k-labels-idx1-ubyte": (10_000,)}
    assert official_split(kmnist, "kmnist", train=False) is None
    assert official_split({**kmnist, "t10k-labels-idx1-ubyte": (9_999,)}, "kmnist", train=False) is False


def test_resuming_with_other_epochs_under_a_step_schedule_is_one_line(synthetic_data, tmp_path):
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={synthetic_data}",
        "--data.val_size=100",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]
    assert _cli([*args, "--trainer.max_epochs=1"], tmp_path).returncode == 0
    record = tmp_path / "lightning_logs/cnn/version_0/metrics.json"
    finished = record.read_text()
    proc = _cli([*args, "--trainer.max_epochs=3", "--ckpt_path=last"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "mnist-bench: config error: model.scheduler: the run being resumed planned its OneCycleLR"
    )
    config = tmp_path / "lightning_logs/cnn/version_0/config.yaml"
    assert "max_epochs: 1" in config.read_text()
    assert record.read_text() == finished, "the finished run's metrics.json is kept"
    assert "max_epochs: 1" in config.read_text(), "and its config.yaml"


@pytest.mark.parametrize(
    "payload",
    [torch.zeros(3), 5, {"hyper_parameters": 5, "state_dict": {}}],
    ids=["tensor", "int", "bad-hparams"],
)
def test_a_loadable_file_that_is_not_a_checkpoint_is_one_line(payload, synthetic_data, tmp_path, capsys):
    from mnist_bench.cli import main

    path = tmp_path / "odd.ckpt"
    torch.save(payload, path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "test",
                "--model",
                "CNN",
                "--ckpt_path",
                str(path),
                f"--data.data_dir={synthetic_data}",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err and "not a checkpoint" in err, err
