"""The seed unit once per machine: cached, reused, remeasured on request, never measured by runs cut short."""

import json

import pytest
import torch

import mnist_bench.benchmark.__main__ as bench_main
from mnist_bench.benchmark import seed_pipeline, seed_unit
from mnist_bench.benchmark.jobs.estimate import cut_short
from mnist_bench.benchmark.jobs.recipes import recipe_for

from ..conftest import ROOT

CONFIGS = ROOT / "configs"


def fake_run_one(model, seed, *args, env=None, label="", on_run_dir=lambda d: None):
    return {
        "model": model,
        "seed": seed,
        "status": "ok",
        "run_dir": None,
        "test/acc": 0.99,
        "time/fit_s": 60.0,
    }


def bench(tmp_path, *args: str, extra: str = "") -> dict:
    code = bench_main.main(
        [
            "--models",
            "cnn",
            "--config_dir",
            str(CONFIGS),
            "--results",
            str(tmp_path / "r"),
            "--root",
            str(tmp_path),
            "--force",
            *args,
            "--",
            extra,
        ]
    )
    assert code == 0
    return json.loads((tmp_path / "r" / "benchmark.json").read_text())


@pytest.fixture
def fake_runs(monkeypatch):
    monkeypatch.setattr(bench_main, "run_one", fake_run_one)


@pytest.fixture
def pipeline_must_not_run(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the seed pipeline was timed")

    monkeypatch.setattr(seed_pipeline, "time_seed_pipeline", fail)


def here() -> dict:
    return seed_unit.machine(torch.device("cpu"))


def test_the_cache_lives_in_the_tests_own_folder_and_follows_xdg(monkeypatch, tmp_path):
    assert str(seed_unit.cache_path()).startswith(str(tmp_path.parent)), "the fixture's folder, not ~/.cache"
    monkeypatch.delenv(seed_unit.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert seed_unit.cache_path() == tmp_path / "xdg" / "mnist-bench" / "seed_unit.json"


def test_a_cached_seed_unit_is_used_and_the_pipeline_not_timed(tmp_path, fake_runs, pipeline_must_not_run):
    seed_unit.remember(here(), 100.0, "2026-12-01 10:00:00 UTC")
    seed_unit.remember(here(), 120.0, "2026-12-02 10:00:00 UTC")
    data = bench(tmp_path)  # the full recipe: it would measure, were none cached
    assert data["seed_unit_s"] == 120.0 and data["rows"][0]["time/fit_su"] == 0.5
    unit = data["seed_unit"]
    assert unit["how"] == "cached" and unit["measured"] == "2026-12-02 10:00:00 UTC"
    assert unit["spread"] == {"min": 100.0, "max": 120.0, "n": 2} and unit["machine"] == here()
    md = (tmp_path / "r" / "benchmark.md").read_text()
    assert "1 su (seed unit) = 120.0 s" in md and "measured 2026-12-02 10:00:00 UTC (cached" in md
    assert "2 measurements of this machine in the cache, 100.0–120.0 s" in md


def test_another_machine_has_its_own_seed_unit(tmp_path, fake_runs, monkeypatch):
    seed_unit.remember({**here(), "cores": 64}, 30.0, "2026-12-01 10:00:00 UTC")
    monkeypatch.setattr(seed_pipeline, "time_seed_pipeline", lambda data_dir, epochs, device: 140.0)
    data = bench(tmp_path)
    assert data["seed_unit_s"] == 140.0 and data["seed_unit"]["how"] == "measured"
    assert [m["seconds"] for m in seed_unit.cached(here())] == [140.0]


@pytest.mark.parametrize(
    "extra",
    [
        "--trainer.limit_train_batches=10",
        "--trainer.max_epochs=1",
        "--trainer.max_steps 20",
        "--trainer.fast_dev_run=true",
        "--trainer.max_time=00:00:05:00",
        "--trainer.limit_test_batches=0.5",
        "--data.train_subset=1000",
    ],
)
def test_runs_cut_short_never_measure_the_seed_unit(
    tmp_path, fake_runs, pipeline_must_not_run, capsys, extra
):
    data = bench(tmp_path, extra=extra)
    assert data["seed_unit_s"] is None and data["seed_unit"] is None
    assert not seed_unit.cache_path().exists()
    assert "the runs are cut short" in capsys.readouterr().out
    seed_unit.remember(here(), 90.0, "2026-12-01 10:00:00 UTC")
    assert bench(tmp_path, extra=extra)["seed_unit_s"] == 90.0, "the cached one is used"


def test_what_cuts_a_run_short():
    cnn, vgg = recipe_for("cnn", CONFIGS), recipe_for("vgg16", CONFIGS)  # 5 and 2 epochs
    assert cut_short([], [cnn, vgg]) is None
    assert cut_short(["--trainer.max_epochs=3"], [vgg]) is None, "more epochs than the recipe"
    assert "cnn recipe: 5" in cut_short(["--trainer.max_epochs=3"], [cnn, vgg])
    for whole in (
        "--trainer.limit_train_batches=1.0",
        "--trainer.max_steps=-1",
        "--trainer.fast_dev_run=false",
        "--trainer.max_time=null",
        "--data.batch_size=64",
    ):
        assert cut_short([whole], [cnn]) is None, whole
    assert cut_short(["--trainer.limit_val_batches", "1"], [cnn]) == "--trainer.limit_val_batches=1"


def test_measure_remeasures_and_adds_to_the_cache(tmp_path, fake_runs, monkeypatch):
    seed_unit.remember(here(), 100.0, "2026-12-01 10:00:00 UTC")
    monkeypatch.setattr(seed_pipeline, "time_seed_pipeline", lambda data_dir, epochs, device: 150.0)
    data = bench(tmp_path, "--seed_unit", "measure")
    assert data["seed_unit_s"] == 150.0 and data["seed_unit"]["how"] == "measured"
    assert [m["seconds"] for m in seed_unit.cached(here())] == [100.0, 150.0]
    assert data["seed_unit"]["spread"] == {"min": 100.0, "max": 150.0, "n": 2}
    assert "(for this benchmark; 2 measurements" in (tmp_path / "r" / "benchmark.md").read_text()
    # asked for, it is measured even for runs cut short
    assert bench(tmp_path, "--seed_unit", "measure", extra="--trainer.max_epochs=1")["seed_unit_s"] == 150.0
    assert len(seed_unit.cached(here())) == 3


def test_before_and_after_the_runs_gives_the_units_spread(tmp_path, fake_runs, monkeypatch):
    times = iter([140.0, 160.0])
    monkeypatch.setattr(seed_pipeline, "time_seed_pipeline", lambda data_dir, epochs, device: next(times))
    data = bench(tmp_path, "--seed_unit", "before_after")
    assert data["seed_unit_s"] == 150.0 and data["seed_unit"]["before_after"] == [140.0, 160.0]
    assert data["rows"][0]["time/fit_su"] == 0.4 and data["rows"][0]["seed_unit_s"] == 150.0
    record = json.loads((tmp_path / "r" / "runs" / "cnn-seed42.json").read_text())
    assert record["seed_unit_s"] == 150.0, "the record holds the unit the table used"
    assert (
        "measured before and after the runs (140.0 and 160.0 s"
        in (tmp_path / "r" / "benchmark.md").read_text()
    )


def test_a_damaged_cache_is_moved_aside_not_lost(tmp_path, fake_runs, monkeypatch, capsys):
    path = seed_unit.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    monkeypatch.setattr(seed_pipeline, "time_seed_pipeline", lambda data_dir, epochs, device: 99.0)
    assert bench(tmp_path)["seed_unit_s"] == 99.0
    assert "is damaged" in capsys.readouterr().out
    assert path.with_name("seed_unit.json.damaged").read_text() == "{not json"
    assert [m["seconds"] for m in seed_unit.cached(here())] == [99.0]


def test_an_array_task_uses_the_cached_unit_and_never_measures(tmp_path, fake_runs, pipeline_must_not_run):
    assert (
        bench_main.main(
            [
                "--models",
                "cnn",
                "--config_dir",
                str(CONFIGS),
                "--results",
                str(tmp_path / "r"),
                "--only",
                "0",
                "--force",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "r/runs/cnn-seed42.json").read_text())["seed_unit_s"] is None
    seed_unit.remember(here(), 80.0, "2026-12-01 10:00:00 UTC")
    assert (
        bench_main.main(
            [
                "--models",
                "cnn",
                "--config_dir",
                str(CONFIGS),
                "--results",
                str(tmp_path / "r"),
                "--only",
                "0",
                "--force",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "r/runs/cnn-seed42.json").read_text())["seed_unit_s"] == 80.0
