"""An estimate before the wait: each run's expected time from finished runs (or a probe), and the remaining
time on every progress line of the benchmark."""

import json
import re

import pytest
import yaml

import mnist_bench.benchmark.__main__ as bench_main
from mnist_bench.benchmark.jobs.estimate import (
    Countdown,
    Estimate,
    estimate_from,
    from_records,
    planned_work,
    run_probe,  # the real one: the conftest fixture replaces the module's after this import
    schedule_s,
)
from mnist_bench.benchmark.jobs.plan import Run, placement
from mnist_bench.benchmark.jobs.recipes import recipe_for
from mnist_bench.provenance import cpu_name

from ..conftest import ROOT

CNN = yaml.safe_load((ROOT / "configs" / "cnn.yaml").read_text())


def finished_row(**changes) -> dict:
    """A finished 5-epoch run: 55,000 training images per epoch at 19 s an epoch after a first of 24 s, 5,000
    validation and 10,000 test images at 0.2 ms each, 1 s per epoch of checkpoints and logging, 8 s of
    start-up."""
    row = {
        "model": "cnn",
        "status": "ok",
        "epochs": 5,
        "time/train_s": 100.0,
        "time/fit_s": 110.0,
        "time/test_s": 2.0,
        "time/run_s": 120.0,
        "throughput/train_img_s": 2750.0,
        "time/epoch_train_s": [24.0, 19.0, 19.0, 19.0, 19.0],
        "test/images": 10000,
        "val/images": 5000,
        "train/full_images": 55000,
        "val/full_images": 5000,
        "test/full_images": 10000,
        "batch_size": 128,
        "precision": "bf16-mixed",
        "device": f"cpu: {cpu_name()} (2 cores, 2 threads)",
        "config": {
            "model": CNN["model"],
            "data": {"init_args": {**CNN["data"], "eval_batch_size": 1000}},
            "trainer": {"max_epochs": 5},
        },
    }
    return {**row, **changes}


def test_the_estimate_from_a_finished_run_scales_with_epochs_and_batches():
    row = finished_row()
    assert estimate_from(row, {"max_epochs": 5}) == pytest.approx(120.0), "the run itself"
    # 1 epoch of 43 batches (5,504 images): 8 start-up + 5 warm-up + 5504 x 19/55000 + 1 validation + 1 + 2
    # test
    assert estimate_from(row, {"max_epochs": 1, "limit_train_batches": 43}) == pytest.approx(
        18.901382, abs=1e-6
    )
    # 2 epochs, half the training batches (215 of 430), 2 validation batches, half the test set
    expected = 8 + 5 + 2 * 215 * 128 * 19 / 55000 + 2 * 2000 * 0.0002 + 2 * 1 + 5000 * 0.0002
    assert estimate_from(
        row, {"max_epochs": 2, "limit_train_batches": 0.5, "limit_val_batches": 2, "limit_test_batches": 0.5}
    ) == pytest.approx(expected)
    # max_steps ends the run in its second epoch
    steps = planned_work({"max_epochs": 5, "max_steps": 500}, (55000, 5000, 10000), 128, 1000)
    assert (steps.epochs, steps.train_images) == (2, 500 * 128)


def test_a_finished_run_counts_only_on_this_machine_and_for_the_same_recipe(tmp_path):
    where = placement({"cpu_capability": "AVX2", "cpu_cores": 2, "gpus": []}, 1)
    runs = tmp_path / "runs"
    runs.mkdir()
    device = f"cpu: {cpu_name()} ("
    planned = {**CNN, "trainer": {"max_epochs": 1}}
    (runs / "cnn-seed42.json").write_text(
        json.dumps({"key": "k", "placement": "AVX512 x64 cores; no GPU; 1 job", "row": finished_row()})
    )
    assert from_records(tmp_path, "cnn", where, device, planned) is None, "another machine"
    (runs / "cnn-seed43.json").write_text(json.dumps({"key": "k", "placement": where, "row": finished_row()}))
    row, path, strong = from_records(tmp_path, "cnn", where, device, planned)
    assert path.endswith("cnn-seed43.json") and strong
    assert from_records(tmp_path, "cnn", where, device, {**planned, "data": {"batch_size": 64}}) is None
    assert (
        from_records(tmp_path, "cnn", where, device, {**planned, "trainer": {"precision": "32-true"}}) is None
    )
    assert from_records(tmp_path, "cnn", where, "cpu: Other CPU (", planned) is None


def test_the_remaining_time_of_the_benchmark_as_runs_start_and_end():
    a, b, c = Run("cnn", 42), Run("vgg16", 42), Run("vit", 42)
    countdown = Countdown({a: Estimate(120.0, ""), b: Estimate(300.0, "")}, jobs=1)
    assert countdown.start(a, now=0.0) == "this run ~2.0 min, the benchmark ~7.0 min left"
    assert countdown.finish(a, now=150.0) == "2.5 min, estimated 2.0 min"
    assert countdown.start(b, now=150.0) == "this run ~5.0 min, the benchmark ~5.0 min left"
    unknown = Countdown({a: Estimate(40.0, ""), c: Estimate(None, "")}, jobs=1, after_s=60.0)
    assert unknown.start(c, now=0.0) == "this run: no estimate, the benchmark at least 1.7 min left"
    assert schedule_s([300.0, 100.0, 100.0, 50.0], jobs=2) == 300.0


def test_every_progress_line_carries_the_remaining_times(tmp_path, monkeypatch, capsys):
    def fake_run_one(model, seed, *args, env=None, label="", on_run_dir=lambda d: None):
        return {"model": model, "seed": seed, "status": "ok", "run_dir": None, "test/acc": 0.99}

    monkeypatch.setattr(bench_main, "run_one", fake_run_one)
    results = tmp_path / "r"
    (results / "runs").mkdir(parents=True)
    where = placement(bench_main.environment(), 1)
    (results / "runs" / "cnn-seed42.json").write_text(
        json.dumps({"key": "k", "placement": where, "row": finished_row()})
    )
    assert (
        bench_main.main(
            [
                "--models",
                "cnn",
                "--seeds",
                "2",
                "--config_dir",
                str(ROOT / "configs"),
                "--results",
                str(results),
                "--seed_unit",
                "skip",
                "--force",
                "--",
                "--trainer.max_epochs=1 --trainer.limit_train_batches=43",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    before = out[: out.index("== cnn (seed 42) ==")]
    assert "== expected time, before the runs ==" in before
    assert re.search(r"cnn \(seed 42\): 19 s  from the finished run in \S+cnn-seed42.json", before)
    assert "all: 38 s" in before
    first, second = re.findall(r"== cnn \(seed 4[23]\) == \[.*\]", out)
    assert re.fullmatch(
        r"== cnn \(seed 42\) == \[0\.0 min into the benchmark; this run ~19 s, the benchmark ~38 s "
        r"left\]",
        first,
    )
    assert re.fullmatch(
        r"== cnn \(seed 43\) == \[0\.\d min into the benchmark; this run ~19 s, the benchmark "
        r"~\d+ s left\]",
        second,
    )
    assert re.search(r"-> ok, test acc 99\.00% \(\d+ s, estimated 19 s\)", out)


def test_a_probe_times_the_runs_own_fit_cut_short(synthetic_data, tmp_path):
    extra = ["--data.val_size=100", "--data.eval_batch_size=100", "--trainer.enable_model_summary=false"]
    row, what = run_probe(
        recipe_for("cnn", ROOT / "configs"), 42, str(synthetic_data), extra, {}, tmp_path / "probe.log"
    )
    assert row is not None, (tmp_path / "probe.log").read_text()[-2000:]
    assert (
        row["epochs"] == 2 and len(row["time/epoch_train_s"]) == 2 and row["time/run_s"] > row["time/fit_s"]
    )
    assert row["train/full_images"] == 500 and row["val/full_images"] == 100 and "probe" in what
    assert not list(tmp_path.glob("lightning_logs")), "the probe's run dir is its own, removed after"
    full = estimate_from(row, {"max_epochs": 5})
    assert full > estimate_from(row, {"max_epochs": 1}) > 0
