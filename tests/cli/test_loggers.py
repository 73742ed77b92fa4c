"""Experiment loggers from the command line or the config: each run keeps its own folder (metrics.json,
checkpoints, figures) whatever loggers are on."""

import csv

import pytest

from mnist_bench.cli import main

from ..conftest import ROOT, run_main

CNN = str(ROOT / "configs" / "cnn.yaml")


@pytest.fixture
def quick(tiny_fit_args):
    return [
        "fit",
        "--config",
        CNN,
        *tiny_fit_args,
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=2",
    ]


def assert_run_folder(run):
    assert (run / "metrics.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "confusion_matrix.png").is_file()


def test_tensorboard_alone_by_default(quick, tmp_path):
    main(quick)
    run = tmp_path / "lightning_logs" / "cnn" / "version_0"
    assert_run_folder(run)
    assert list(run.glob("events.out.tfevents.*")) and not (run / "metrics.csv").exists()


def test_csv_and_tensorboard_together_in_the_run_folder(quick, tmp_path):
    main([*quick, "--logger", "tensorboard,csv"])
    run = tmp_path / "lightning_logs" / "cnn" / "version_0"
    assert_run_folder(run)
    assert list(run.glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    epochs = {row["epoch"] for row in rows if row.get("val/acc")}
    assert epochs == {"0", "1"}, "one val/acc row per epoch"
    assert (run / "config.yaml").is_file()
    # a second run numbers its folder after the first, for both loggers
    main([*quick, "--logger", "csv"])
    second = tmp_path / "lightning_logs" / "cnn" / "version_1"
    assert_run_folder(second)
    assert (second / "metrics.csv").is_file() and not list(second.glob("events.out.tfevents.*"))


def test_a_logger_given_in_full_writes_where_it_is_told_and_the_run_folder_stays(quick, tmp_path):
    elsewhere = tmp_path / "my_csv_logs"
    main([*quick, "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={elsewhere}"])
    assert_run_folder(tmp_path / "lightning_logs" / "cnn" / "version_0")
    assert (tmp_path / "lightning_logs" / "cnn" / "version_0" / "config.yaml").is_file()
    assert list(elsewhere.rglob("metrics.csv"))


def test_logging_off_keeps_the_run_folder(quick, tmp_path):
    main([*quick, "--trainer.logger=false"])
    run = tmp_path / "lightning_logs" / "cnn" / "version_0"
    assert_run_folder(run)
    assert (run / "config.yaml").is_file()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_an_unknown_logger_is_a_config_error_naming_it(quick, tmp_path, capsys):
    code, err = run_main([*quick, "--logger", "tensorboard,neptune"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--logger neptune" in err.splitlines()[0]
    assert not (tmp_path / "lightning_logs").exists()


def test_a_logger_whose_package_is_missing_says_what_to_install(quick, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    code, err = run_main([*quick, "--logger", "wandb"], capsys)
    assert code == 2 and "pip install wandb" in err.splitlines()[0]


def test_mlflow_records_the_run_in_a_local_store_beside_the_runs(quick, tmp_path):
    from mlflow.tracking import MlflowClient

    main([*quick, "--logger", "mlflow"])
    run = tmp_path / "lightning_logs" / "cnn" / "version_0"
    assert_run_folder(run)
    assert (run / "config.yaml").is_file(), "config.yaml in the run's folder, not in MLflow's"
    client = MlflowClient(tracking_uri=(tmp_path / "lightning_logs" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("mnist-bench/cnn")
    (recorded,) = client.search_runs([experiment.experiment_id])
    assert recorded.info.run_name == "version_0" and recorded.data.tags["run_dir"] == str(run)
    history = client.get_metric_history(recorded.info.run_id, "val/acc")
    assert len(history) == 2, "one val/acc per epoch"
    assert "test/acc" in recorded.data.metrics


def wandb_records(path):
    """The records of a W&B offline run file (``run-<id>.wandb``): W&B's LevelDB-style log (a 7-byte header,
    then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle /
    4 last) of protobuf ``Record`` messages."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", raw[:7]
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0:
            break
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_records_the_run_offline_in_the_run_folder(quick, tmp_path):
    import json

    import wandb

    main([*quick, "--logger", "wandb"])
    wandb.finish()  # what the end of the process does for the command line
    run = tmp_path / "lightning_logs" / "cnn" / "version_0"
    assert_run_folder(run)
    (offline,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(offline)
    (named,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert named.display_name == "cnn/version_0" and named.project == "mnist-bench"
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [row["epoch"] for row in history if "val/acc" in row] == [0, 1], "one val/acc per epoch"
    assert any("test/acc" in row for row in history)


def test_a_resumed_run_continues_its_metrics_csv_even_when_the_resume_is_refused(
    tiny_fit_args, tmp_path, capsys
):
    base = ["fit", "--config", CNN, *tiny_fit_args, "--trainer.limit_train_batches=2", "--logger", "csv"]
    # resumed for a second epoch (no step-counting schedule to stretch): epoch 0's rows kept, epoch 1's added
    plain = [*base, "--model.init_args.scheduler=null"]
    main([*plain, "--trainer.max_epochs=1"])
    main([*plain, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    metrics_csv = tmp_path / "lightning_logs" / "cnn" / "version_0" / "metrics.csv"
    rows = list(csv.DictReader(metrics_csv.open()))
    assert sorted(row["epoch"] for row in rows if row.get("val/acc")) == ["0", "1"]
    assert not (tmp_path / "lightning_logs" / "cnn" / "version_1").exists()
    # a resume refused (OneCycleLR planned over other steps) leaves the file as it was
    other = [*base, f"--trainer.default_root_dir={tmp_path / 'other'}"]
    main([*other, "--trainer.max_epochs=1"])
    metrics_csv = tmp_path / "other" / "lightning_logs" / "cnn" / "version_0" / "metrics.csv"
    before = metrics_csv.read_text()
    code, err = run_main([*other, "--trainer.max_epochs=2", "--ckpt_path", "last"], capsys)
    assert code == 2 and "cannot stretch" in err
    assert metrics_csv.read_text() == before


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--logger", ""], "--logger is empty"),
        (["--logger", "csv", "--trainer.logger=false"], "contradict"),
    ],
)
def test_contradictory_or_empty_logger_settings_are_config_errors(extra, named, quick, capsys):
    code, err = run_main([*quick, *extra], capsys)
    assert code == 2 and named in err.splitlines()[0]
