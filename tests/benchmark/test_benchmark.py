import csv
import io
import json

import pytest

from mnist_bench.benchmark.__main__ import main as benchmark_main
from mnist_bench.benchmark.report.aggregate import summarize
from mnist_bench.benchmark.report.table import csv_text, markdown_table
from mnist_bench.plots import confusion_matrix_figure, digit_grid_figure, save_figure
from mnist_bench.plots.benchmark import curves_figure, tradeoff_figure

from ..conftest import ROOT


def row(model, seed, acc, train_s, status="ok", error=None):
    return {
        "model": model,
        "seed": seed,
        "status": status,
        "error": error,
        "test/acc": acc,
        "test/f1": acc - 0.001 if acc else None,
        "test/loss": 0.03 if acc else None,
        "time/train_s": train_s,
        "time/fit_s": train_s + 2 if train_s else None,
        "epochs": 6,
        "params": 421_866,
        "image_size": 28,
        "pretrained": False,
        "precision": "bf16-mixed",
        "device": "cpu: test",
        "history": [
            {
                "epoch": e,
                "train/loss": 0.3 / (e + 1),
                "val/loss": 0.2 / (e + 1),
                "train/acc": 0.9 + e / 100,
                "val/acc": 0.95 + e / 100,
            }
            for e in range(3)
        ],
    }


def test_summary_means_stds_and_failures():
    rows = [
        row("cnn", 42, 0.994, 40.0),
        row("cnn", 43, 0.996, 44.0),
        row("cnn", 44, 0.995, 42.0),
        row("vit", 42, None, None, status="failed", error="RuntimeError: out of memory"),
        row("alexnet", 42, 0.993, 100.0),
        row("alexnet", 43, None, None, status="failed", error="killed"),
    ]
    table = {r["model"]: r for r in summarize(rows)}
    assert list(table) == ["cnn", "vit", "alexnet"]
    assert table["cnn"]["test/acc"] == pytest.approx(0.995)
    assert table["cnn"]["test/acc:std"] == pytest.approx(0.001)
    assert table["cnn"]["time/train_s"] == pytest.approx(42.0) and table["cnn"]["n_ok"] == 3
    assert table["vit"]["status"] == "failed" and table["vit"]["error"] == "RuntimeError: out of memory"
    assert table["vit"].get("test/acc") is None
    assert table["alexnet"]["status"] == "partial" and table["alexnet"]["test/acc:std"] is None

    md = markdown_table(list(table.values()))
    assert "99.50% ± 0.10%" in md and "42.0 ± 2.0" in md
    vit_line = next(line for line in md.splitlines() if line.startswith("| vit"))
    assert "failed" in vit_line and "%" not in vit_line  # no made-up number for a failed model

    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert len(parsed) == 6 and parsed[3]["status"] == "failed" and parsed[3]["test/acc"] == ""
    assert float(parsed[0]["test/acc"]) == 0.994


def test_plot_functions_write_png_files(tmp_path):
    import numpy as np

    rows = [row("cnn", 42, 0.994, 40.0), row("vit", 42, 0.99, 300.0)]
    paths = [
        save_figure(curves_figure(rows), tmp_path / "curves.png"),
        save_figure(tradeoff_figure(summarize(rows)), tmp_path / "tradeoff.png"),
        save_figure(confusion_matrix_figure(np.eye(10, dtype=int) * 980 + 2), tmp_path / "cm.png"),
        save_figure(
            digit_grid_figure(np.random.rand(10, 1, 28, 28), np.arange(10), np.arange(10) % 3, "grid"),
            tmp_path / "grid.png",
        ),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_benchmark_smoke_run_writes_every_file(synthetic_data, tmp_path, capsys):
    results = tmp_path / "results"
    code = benchmark_main(
        [
            "--models",
            "cnn",
            "--seeds",
            "2",
            "--data_dir",
            str(synthetic_data),
            "--config_dir",
            str(ROOT / "configs"),
            "--root",
            str(tmp_path),
            "--results",
            str(results),
            "--",
            "--trainer.fast_dev_run=true --data.val_size=100 --data.eval_batch_size=100",
        ]
    )
    assert code == 0
    data = json.loads((results / "benchmark.json").read_text())
    assert [r["seed"] for r in data["rows"]] == [42, 43]
    assert all(r["status"] == "ok" for r in data["rows"])
    assert data["environment"]["versions"]["torch"]
    assert data["summary"][0]["n_ok"] == 2
    md = (results / "benchmark.md").read_text()
    assert "Ran on CPU only" in md and "| cnn | ok |" in md and "mean ± std over 2 seeds" in md
    for name in (
        "benchmark.csv",
        "training_curves.png",
        "accuracy_vs_time.png",
        "confusion_matrix_cnn.png",
        "misclassified_cnn.png",
    ):
        assert (results / name).stat().st_size > 0, name


def test_benchmark_failed_model_is_a_failed_row(synthetic_data, tmp_path):
    results = tmp_path / "results"
    code = benchmark_main(
        [
            "--models",
            "cnn",
            "--data_dir",
            str(tmp_path / "no-data"),
            "--config_dir",
            str(ROOT / "configs"),
            "--root",
            str(tmp_path),
            "--results",
            str(results),
            "--",
            "--trainer.fast_dev_run=true",
        ]
    )
    assert code == 1
    (only,) = json.loads((results / "benchmark.json").read_text())["rows"]
    assert only["status"] == "failed" and "mnist-bench data" in only["error"]
    assert only["test/acc"] is None


def test_unknown_model_is_refused(capsys):
    assert benchmark_main(["--models", "resnet", "--config_dir", str(ROOT / "configs")]) == 2
    assert "no config for resnet" in capsys.readouterr().err


def test_a_dataset_without_a_data_overlay_is_one_line_naming_the_file(capsys):
    assert (
        benchmark_main(["--models", "cnn", "--config_dir", str(ROOT / "configs"), "--dataset", "kmnist"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ROOT / "configs" / "data" / "kmnist.yaml") in err
    assert "have: mnist, fashion_mnist" in err and "data: {dataset: kmnist}" in err


@pytest.mark.parametrize(
    "dataset, overlay, said",
    [
        ("../vit", None, "letters, digits, '_' and '-' only"),
        ("", None, "letters, digits"),
        ("fashion-mnist", None, "did you mean fashion_mnist?"),
        ("mine", "", "no data: section"),
        ("mine", "model: {class_path: CNN}\n", "no data: section"),
        ("mine", "data: [\n", "not a readable YAML file"),
        ("mine", "data: {dataset: fashion-mnist}\n", "'fashion-mnist' is not a known dataset"),
    ],
)
def test_a_dataset_or_overlay_that_cannot_work_is_one_line_before_any_run(
    dataset, overlay, said, tmp_path, capsys
):
    configs = tmp_path / "configs"
    (configs / "data").mkdir(parents=True)
    (configs / "cnn.yaml").write_text((ROOT / "configs" / "cnn.yaml").read_text())
    if overlay is not None:
        (configs / "data" / f"{dataset}.yaml").write_text(overlay)
    (configs / "data" / "fashion_mnist.yaml").write_text("data: {dataset: fashion_mnist}\n")
    code = benchmark_main(
        [
            "--models",
            "cnn",
            "--config_dir",
            str(configs),
            "--dataset",
            dataset,
            "--results",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and said in err, err
    assert not (tmp_path / "r").exists(), "nothing ran"


def test_a_dataset_trains_each_recipe_with_its_overlays_after_it(tmp_path, monkeypatch):
    """make benchmark DATASET=fashion_mnist: every run is its model's config, the data overlay, and the
    model's own overlay where there is one, in that order, and its results go to results/fashion_mnist by
    default."""
    import mnist_bench.benchmark.jobs.runner as runner

    commands = []

    def no_training(cmd, log_file, *args, **kwargs):
        commands.append(cmd)
        return 1, ["error: not trained in this test"], []

    monkeypatch.setattr(runner, "run_logged", no_training)
    monkeypatch.chdir(tmp_path)
    configs = ROOT / "configs"
    assert (
        benchmark_main(
            [
                "--models",
                "cnn,vit",
                "--config_dir",
                str(configs),
                "--dataset",
                "fashion_mnist",
                "--seed_unit",
                "skip",
                "--estimate",
                "off",
                "--data_dir",
                "d",
            ]
        )
        == 1
    )
    given = [[cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--config"] for cmd in commands]
    assert given == [
        [
            str(configs / "cnn.yaml"),
            str(configs / "data/fashion_mnist.yaml"),
            str(configs / "fashion_mnist/cnn.yaml"),
        ],
        [str(configs / "vit.yaml"), str(configs / "data/fashion_mnist.yaml")],
    ]
    rows = json.loads((tmp_path / "results/fashion_mnist/benchmark.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["failed", "failed"] and not (
        tmp_path / "results/benchmark.json"
    ).exists()


def test_overhead_benchmark_pairs_lightning_with_the_plain_loop(synthetic_data, tmp_path, capsys):
    import statistics

    import yaml

    from mnist_bench.benchmark.experiments.overhead import main as overhead_main

    config = yaml.safe_load((ROOT / "configs" / "cnn.yaml").read_text())
    config["trainer"].update(max_epochs=1, default_root_dir=str(tmp_path), enable_model_summary=False)
    config["data"].update(val_size=100, eval_batch_size=100, batch_size=50)
    tiny = tmp_path / "tiny_cnn.yaml"
    tiny.write_text(yaml.safe_dump(config))
    out = tmp_path / "overhead.json"
    assert (
        overhead_main(
            [
                "--data_dir",
                str(synthetic_data),
                "--config",
                str(tiny),
                "--repeats",
                "2",
                "--seed_epochs",
                "1",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    pairs = result["ratio/lightning_over_plain_pairs"]
    assert len(pairs) == len(result["lightning/train_s_all"]) == len(result["plain_loop/train_s_all"]) == 2
    # each pair is a Lightning run and the plain-loop run right after it (the times are stored rounded)
    assert pairs == pytest.approx(
        [
            lt / p
            for lt, p in zip(result["lightning/train_s_all"], result["plain_loop/train_s_all"], strict=True)
        ],
        rel=1e-2,
    )
    assert result["ratio/lightning_over_plain"] == pytest.approx(statistics.median(pairs), abs=1e-4)
    assert result["seed_pipeline/train_s"] > 0 and result["seed_pipeline/epochs"] == 1
    assert 0 <= result["lightning/test_acc"] <= 1
    assert "Lightning overhead over the plain loop" in capsys.readouterr().out


def test_benchmark_reports_seed_units_measured_in_the_same_run(synthetic_data, tmp_path):
    results = tmp_path / "results"
    assert (
        benchmark_main(
            [  # measured when asked for, even though fast_dev_run cuts the runs short
                "--models",
                "cnn",
                "--seed_unit",
                "measure",
                "--data_dir",
                str(synthetic_data),
                "--config_dir",
                str(ROOT / "configs"),
                "--root",
                str(tmp_path),
                "--results",
                str(results),
                "--",
                "--trainer.fast_dev_run=true --data.val_size=100 --data.eval_batch_size=100",
            ]
        )
        == 0
    )
    data = json.loads((results / "benchmark.json").read_text())
    su = data["seed_unit_s"]
    assert su > 0
    (only,) = data["rows"]
    assert only["time/fit_su"] == pytest.approx(only["time/fit_s"] / su, rel=1e-2)
    md = (results / "benchmark.md").read_text()
    assert "| fit su |" in md and f"1 su (seed unit) = {su:.1f} s" in md and " su)" in md
    assert only["hardware"] in md


def test_results_from_run_dirs_without_training(synthetic_data, tmp_path):
    first = tmp_path / "first"
    assert (
        benchmark_main(
            [
                "--models",
                "cnn",
                "--seed_unit",
                "skip",
                "--data_dir",
                str(synthetic_data),
                "--config_dir",
                str(ROOT / "configs"),
                "--root",
                str(tmp_path),
                "--results",
                str(first),
                "--",
                "--trainer.fast_dev_run=true --data.val_size=100 --data.eval_batch_size=100",
            ]
        )
        == 0
    )
    run = next((tmp_path / "lightning_logs" / "cnn").glob("version_*"))
    killed = tmp_path / "lightning_logs" / "vit" / "version_0"
    killed.mkdir(parents=True)
    again = tmp_path / "again"
    assert (
        benchmark_main(["--from_runs", str(run), str(killed), "--results", str(again)]) == 1
    )  # one failed row
    rows = json.loads((again / "benchmark.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["cnn", "vit"]
    low, high = rows[0]["test/acc_ci"]  # each run's row gets the interval of its accuracy
    assert low <= rows[0]["test/acc"] <= high
    assert rows[0] == {
        **json.loads((run / "metrics.json").read_text()),
        "run_dir": str(run),
        "test/acc_ci": [low, high],
    }
    assert rows[1]["status"] == "failed" and "no metrics.json" in rows[1]["error"]
    assert (again / "confusion_matrix_cnn.png").is_file()
    md = (again / "benchmark.md").read_text()
    assert "| vit | failed |" in md and "one seed" in md


def test_a_config_named_unlike_its_model_is_found(synthetic_data, tmp_path):
    """The runner reads the run dir the run names (lightning_logs/cnn/...), not one named after the config
    file."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "cnn_small.yaml").write_text((ROOT / "configs" / "cnn.yaml").read_text())
    results = tmp_path / "results"
    assert (
        benchmark_main(
            [
                "--models",
                "cnn_small",
                "--seed_unit",
                "skip",
                "--data_dir",
                str(synthetic_data),
                "--config_dir",
                str(configs),
                "--root",
                str(tmp_path),
                "--results",
                str(results),
                "--",
                "--trainer.fast_dev_run=true --data.val_size=100 --data.eval_batch_size=100",
            ]
        )
        == 0
    )
    (only,) = json.loads((results / "benchmark.json").read_text())["rows"]
    assert only["status"] == "ok" and only["model"] == "cnn"
    assert only["run_dir"] == str(tmp_path / "lightning_logs" / "cnn" / "version_0")


def test_a_silent_hang_times_out(tmp_path):
    import sys
    import time

    from mnist_bench.benchmark.jobs.runner import run_logged

    start = time.perf_counter()
    # the child starts a grandchild (as DDP's launcher starts ranks) that holds the output open
    sleeper = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time;"
        " time.sleep(60)']); time.sleep(60)"
    )
    code, lines, _ = run_logged([sys.executable, "-c", sleeper], tmp_path / "log.txt", timeout_s=1)
    assert code is None and lines == []
    assert time.perf_counter() - start < 30
    code, lines, kept = run_logged(
        [sys.executable, "-c", "print('hi'); print('keep me'); raise SystemExit(3)"],
        tmp_path / "log2.txt",
        timeout_s=60,
        keep=lambda line: line.startswith("keep"),
    )
    assert code == 3 and lines == ["hi", "keep me"] and kept == ["keep me"]


def test_results_from_runs_of_several_commits_name_each_commit_with_its_models():
    from mnist_bench.benchmark.__main__ import commits_of

    rows = [
        {"model": "cnn", "git_sha": "aaa"},
        {"model": "vit", "git_sha": "bbb"},
        {"model": "cnn", "git_sha": "aaa"},
        {"model": "vgg16", "git_sha": "aaa"},
        {"model": "alexnet", "status": "failed"},
    ]
    assert commits_of(rows) == "aaa (cnn, vgg16), bbb (vit)"
    assert commits_of(rows[:1]) == "aaa"
    assert commits_of([{"model": "cnn"}]) is None
