"""The benchmark's list of runs: done runs reused, runs at once on their own cores or GPUs, a SLURM job
array."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mnist_bench.benchmark.__main__ import main as benchmark_main
from mnist_bench.benchmark.jobs.plan import Run, job_environments
from mnist_bench.benchmark.jobs.recipes import recipe_for
from mnist_bench.benchmark.jobs.runner import run_all

from ..conftest import ROOT

FAST = "--trainer.fast_dev_run=true --data.val_size=100 --data.eval_batch_size=100"


def bench(synthetic_data, tmp_path, *args: str, extra: str = FAST, results: str = "results") -> int:
    return benchmark_main(
        [
            *args,
            "--data_dir",
            str(synthetic_data),
            "--config_dir",
            str(ROOT / "configs"),
            "--root",
            str(tmp_path),
            "--results",
            str(tmp_path / results),
            "--seed_unit",
            "skip",
            "--",
            extra,
        ]
    )


def versions(tmp_path, model: str = "cnn") -> list[str]:
    return sorted(p.name for p in (tmp_path / "lightning_logs" / model).glob("version_*"))


def rows(tmp_path, results: str = "results") -> list[dict]:
    return json.loads((tmp_path / results / "benchmark.json").read_text())["rows"]


def test_a_rerun_reuses_runs_done_with_the_same_config_seed_and_code(synthetic_data, tmp_path, capsys):
    assert bench(synthetic_data, tmp_path, "--models", "cnn") == 0
    first = rows(tmp_path)
    assert versions(tmp_path) == ["version_0"]
    capsys.readouterr()
    assert bench(synthetic_data, tmp_path, "--models", "cnn") == 0
    assert "done before with the same config, seed, code and hardware" in capsys.readouterr().out
    assert versions(tmp_path) == ["version_0"], "nothing trained again"
    assert rows(tmp_path)[0]["test/acc"] == first[0]["test/acc"]
    assert rows(tmp_path)[0]["run_dir"] == first[0]["run_dir"]
    # other arguments, another seed, or --force: trained again
    assert bench(synthetic_data, tmp_path, "--models", "cnn", extra=FAST + " --data.batch_size=32") == 0
    assert versions(tmp_path) == ["version_0", "version_1"]
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--force") == 0
    assert versions(tmp_path) == ["version_0", "version_1", "version_2"]
    # a reused run whose folder lost its predictions is trained again
    (tmp_path / "lightning_logs/cnn/version_2/test_predictions.npz").unlink()
    assert bench(synthetic_data, tmp_path, "--models", "cnn") == 0
    assert versions(tmp_path) == ["version_0", "version_1", "version_2", "version_3"]


def test_each_job_gets_its_own_gpu_or_its_own_cores():
    assert job_environments(2, ["0", "1"], [0, 1, 2, 3]) == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
    ]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in job_environments(3, ["4", "6"], [0])] == ["4", "6", "4"]
    assert job_environments(1, [], [0, 1]) == [{}], "one job keeps the whole machine"
    assert job_environments(1, ["0", "1"], [0, 1]) == [{}], (
        "one job keeps every GPU (a DDP run may use them all)"
    )
    assert job_environments(2, [], [0, 1, 2, 3]) == [
        {"MNIST_BENCH_CPUS": "0,2", "OMP_NUM_THREADS": "2"},
        {"MNIST_BENCH_CPUS": "1,3", "OMP_NUM_THREADS": "2"},
    ]
    with pytest.raises(ValueError, match="at most one job per core"):
        job_environments(3, [], [0, 1])


def test_runs_at_once_never_share_a_slot_and_come_back_in_list_order():
    environments = [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    runs = [Run("cnn", 42 + k) for k in range(5)]
    in_use: list[str] = []
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def train(run, env, label, on_run_dir):
        with lock:
            assert env["CUDA_VISIBLE_DEVICES"] not in in_use, "two runs on one GPU"
            in_use.append(env["CUDA_VISIBLE_DEVICES"])
            seen.append((run.name, env["CUDA_VISIBLE_DEVICES"]))
        on_run_dir(ROOT)  # an existing folder: the next run may start
        time.sleep(0.05 * (5 - run.seed + 42))  # the first runs end last
        with lock:
            in_use.remove(env["CUDA_VISIBLE_DEVICES"])
        return {"model": run.model, "seed": run.seed, "label": label}

    done = []
    result = run_all(runs, train, environments, done=lambda run, row: done.append(run))
    assert list(result) == runs and [r["seed"] for r in result.values()] == [42, 43, 44, 45, 46]
    assert {gpu for _, gpu in seen} == {"0", "1"} and sorted(done, key=lambda r: r.seed) == runs
    assert result[runs[0]]["label"] == "[cnn-seed42] "


def test_a_job_pins_itself_to_its_cores():
    core = sorted(os.sched_getaffinity(0))[-1]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from mnist_bench.utils import pin_to_given_cpus; "
            "pin_to_given_cpus(); print(sorted(os.sched_getaffinity(0)))",
        ],
        env={**os.environ, "MNIST_BENCH_CPUS": str(core)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"[{core}]"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two jobs need two CPU cores")
def test_two_jobs_give_the_same_table_as_one(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same threads per run either way: the same arithmetic
    assert bench(synthetic_data, tmp_path / "one", "--models", "cnn,vit", "--jobs", "1") == 0
    assert bench(synthetic_data, tmp_path / "two", "--models", "cnn,vit", "--jobs", "2") == 0
    keys = ("model", "seed", "status", "test/acc", "test/f1", "test/loss", "test/acc_ci", "epochs", "params")
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [{k: r[k] for k in keys} for r in one] == [{k: r[k] for k in keys} for r in two]
    md_one = (tmp_path / "one/results/benchmark.md").read_text()
    md_two = (tmp_path / "two/results/benchmark.md").read_text()
    assert md_one.split("## Paired tests")[1] == md_two.split("## Paired tests")[1]


def test_an_array_task_runs_one_run_and_the_table_shows_the_missing_ones(synthetic_data, tmp_path, capsys):
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--seeds", "2", "--list") == 0
    assert capsys.readouterr().out.splitlines() == ["0 cnn 42", "1 cnn 43"]
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--seeds", "2", "--only", "0") == 0
    assert not (tmp_path / "results/benchmark.md").exists(), "a task writes its run, not the table"
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--seeds", "2", "--aggregate") == 1
    done, missing = rows(tmp_path)
    assert done["status"] == "ok" and done["seed"] == 42
    assert missing["status"] == "failed" and "run 1 has no result" in missing["error"]
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--seeds", "2", "--only", "2") == 2


def _slurm(tmp_path, *args: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_benchmark.sh"), *args],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        env={**os.environ, "PY": sys.executable, "PATH": path},
        timeout=120,
    )


def test_the_slurm_script_submits_one_task_per_run_and_a_table_after_them(tmp_path):
    args = ("--models", "cnn,vit", "--seeds", "2", "--config_dir", str(ROOT / "configs"), "--results", "out")
    no_sbatch = _slurm(tmp_path, *args, path="/usr/bin:/bin")
    assert no_sbatch.returncode == 0, no_sbatch.stderr
    assert "4 runs" in no_sbatch.stdout and "0 cnn 42\n1 cnn 43\n2 vit 42\n3 vit 43" in no_sbatch.stdout
    assert "dry run" in no_sbatch.stdout and "--array=0-3" in no_sbatch.stdout
    assert not (tmp_path / "out").exists(), "a dry run makes nothing"
    missing = _slurm(tmp_path, "--results", path="/usr/bin:/bin")
    assert missing.returncode == 2 and "--results needs a folder" in missing.stderr
    assert (
        "--only \\$SLURM_ARRAY_TASK_ID" in no_sbatch.stdout
        or "--only $SLURM_ARRAY_TASK_ID" in no_sbatch.stdout
    )
    # with an sbatch on the PATH: the array, then the table after it whatever became of the tasks
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/bash\necho "$@" >> "$SBATCH_LOG"\necho 1234\n')
    (fake / "sbatch").chmod(0o755)
    os.environ["SBATCH_LOG"] = str(tmp_path / "sbatch.log")
    try:
        submitted = _slurm(tmp_path, *args, "--", "--trainer.max_epochs=1", path=f"{fake}:/usr/bin:/bin")
    finally:
        del os.environ["SBATCH_LOG"]
    assert submitted.returncode == 0, submitted.stderr
    array, table = (tmp_path / "sbatch.log").read_text().splitlines()
    assert (
        "--array=0-3" in array
        and "--only $SLURM_ARRAY_TASK_ID" in array
        and "--trainer.max_epochs=1" in array
    )
    assert "slurm_runs/task_$SLURM_ARRAY_TASK_ID" in array
    assert (
        "--dependency=afterany:1234" in table and "--aggregate" in table and "--trainer.max_epochs=1" in table
    )


def test_the_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=os.path.dirname(sys.executable)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (make install brings it with the dev extras)")
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_key_changes_with_the_code_a_run_executes_not_with_the_reporting(tmp_path, monkeypatch):
    import mnist_bench.benchmark.jobs.plan as plan

    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "mnist_bench", tree / "mnist_bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    monkeypatch.setattr(plan, "PACKAGE_ROOT", tree)
    run = Run("cnn", 42)

    def key(*extra: str, seed: int = 42) -> str:
        return plan.run_key(Run("cnn", seed), recipe_for("cnn", ROOT / "configs"), "data", list(extra))

    before = key()
    with open(tree / "mnist_bench/benchmark/report/table.py", "a") as f:
        f.write("\n# a new column\n")
    assert key() == before, "a change to the table does not make the runs stale"
    assert key("--trainer.max_epochs=1") != before and key(seed=43) != before and run.name == "cnn-seed42"
    fashion = plan.run_key(run, recipe_for("cnn", ROOT / "configs", "fashion_mnist"), "data", [])
    assert fashion != before, "a dataset's overlays are part of the recipe"
    overlay = tmp_path / "more.yaml"
    overlay.write_text("data: {max_shift_px: 1.0}\n")
    given = key("--config", str(overlay))
    overlay.write_text("data: {max_shift_px: 2.0}\n")
    assert key("--config", str(overlay)) != given, "a file among the extra arguments counts by content"
    with open(tree / "mnist_bench/models/cnn.py", "a") as f:
        f.write("\n# a change to a model\n")
    assert key() != before


def test_a_record_is_reused_only_on_the_same_hardware_and_a_damaged_one_never(tmp_path):
    from mnist_bench.benchmark.jobs.plan import done_before, placement, record_done

    run_dir = tmp_path / "lightning_logs/cnn/version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text('{"status": "ok"}')
    (run_dir / "test_predictions.npz").write_bytes(b"x")
    env = {"cpu_capability": "AVX2", "cpu_cores": 2, "gpus": []}
    here, there = placement(env, 1), placement(env, 2)
    assert here != there and placement({**env, "gpus": ["NVIDIA H100"]}, 1) != here
    run = Run("cnn", 42)
    record_done(tmp_path, run, "k", here, {"status": "ok", "run_dir": str(run_dir)}, 100.0)
    assert done_before(tmp_path, run, "k", here)["seed_unit_s"] == 100.0
    assert done_before(tmp_path, run, "k", there) is None, "other jobs, other threads: trained again"
    assert done_before(tmp_path, run, "other", here) is None
    (run_dir / "metrics.json").write_text("[1]")
    assert done_before(tmp_path, run, "k", here) is None
    for damaged in ("[]", '{"key": "k"}', '{"key": "k", "row": null}', "{not json"):
        (tmp_path / "runs/cnn-seed42.json").write_text(damaged)
        assert done_before(tmp_path, run, "k", here) is None


def test_a_damaged_record_is_a_row_that_says_so(synthetic_data, tmp_path):
    (tmp_path / "results/runs").mkdir(parents=True)
    (tmp_path / "results/runs/cnn-seed42.json").write_text("[]")
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--aggregate") == 1
    (only,) = rows(tmp_path)
    assert only["status"] == "failed" and "is damaged" in only["error"]


def test_a_model_named_twice_is_refused(capsys):
    assert benchmark_main(["--models", "cnn,cnn", "--config_dir", str(ROOT / "configs"), "--list"]) == 2
    assert "names cnn more than once" in capsys.readouterr().err


def test_a_lone_run_keeps_the_whole_machine_and_several_share_the_gpus(tmp_path, monkeypatch):
    import mnist_bench.benchmark.__main__ as bench_main

    given = []

    def fake_run_one(model, seed, *args, env=None, label="", on_run_dir=lambda d: None):
        given.append(env)
        on_run_dir(tmp_path)
        return {"model": model, "seed": seed, "status": "ok", "run_dir": None, "test/acc": 0.9}

    monkeypatch.setattr(bench_main, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(bench_main, "run_one", fake_run_one)
    common = [
        "--models",
        "cnn",
        "--config_dir",
        str(ROOT / "configs"),
        "--results",
        str(tmp_path / "r"),
        "--seed_unit",
        "skip",
        "--force",
    ]
    assert bench_main.main([*common, "--seeds", "2", "--only", "1"]) == 0
    assert given == [{}], "an array task with its GPUs uses them all"
    given.clear()
    assert bench_main.main([*common, "--seeds", "2"]) == 0
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in given) == ["0", "1"]


def test_ctrl_c_stops_the_runs_going_on_and_starts_no_other(tmp_path):
    import signal

    from mnist_bench.benchmark.jobs.runner import run_logged

    started = []

    def train(run, env, label, on_run_dir):
        started.append(run)
        on_run_dir(tmp_path)
        code, _, _ = run_logged(["sleep", "60"], tmp_path / f"{run.name}.log")
        return {"model": run.model, "seed": run.seed, "status": "failed" if code else "ok"}

    # Python's own Ctrl-C (an earlier test in this process may have left Lightning's or another handler in
    # place)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(2.0, os.kill, args=(os.getpid(), signal.SIGINT)).start()
    begin = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_all([Run("cnn", 42 + k) for k in range(4)], train, [{}, {}])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - begin < 15, "the runs going on were stopped, not waited for"
    time.sleep(1)
    assert len(started) == 2, "no run started after Ctrl-C"


@pytest.mark.parametrize("where", ["file", "file/under"])
def test_a_results_folder_that_is_a_file_is_one_line(tmp_path, capsys, where):
    (tmp_path / "file").write_text("mine")
    results = tmp_path / where
    assert (
        benchmark_main(
            [
                "--models",
                "cnn",
                "--config_dir",
                str(ROOT / "configs"),
                "--results",
                str(results),
                "--aggregate",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "file") in err and "is a file" in err, err
    assert (tmp_path / "file").read_text() == "mine"


def test_an_edited_record_is_never_reported_as_a_result(synthetic_data, tmp_path):
    """A record says 99.99% and points at another run: the row is the run's own, or failed and says so."""
    assert bench(synthetic_data, tmp_path, "--models", "cnn") == 0
    assert bench(synthetic_data, tmp_path, "--models", "cnn", extra=FAST + " --data.batch_size=32") == 0
    record_file = tmp_path / "results/runs/cnn-seed42.json"
    record = json.loads(record_file.read_text())
    honest = dict(record["row"])
    truth = json.loads((Path(record["row"]["run_dir"]) / "metrics.json").read_text())["test/acc"]
    record["row"]["test/acc"] = 0.9999
    record_file.write_text(json.dumps(record))
    for args in ((), ("--aggregate",)):
        assert (
            bench(synthetic_data, tmp_path, "--models", "cnn", *args, extra=FAST + " --data.batch_size=32")
            == 1
        )
        (row,) = rows(tmp_path)
        assert (
            row["status"] == "failed" and "disagrees with" in row["error"] and "test/acc" in row["error"]
        ), row
        assert 0.9999 not in (row.get("test/acc"),)
    # the record's run dir swapped for the other run's (whose figures differ): the same
    record["row"]["test/acc"] = truth
    record["row"]["run_dir"] = str(tmp_path / "lightning_logs/cnn/version_0")
    record_file.write_text(json.dumps(record))
    assert (
        bench(
            synthetic_data, tmp_path, "--models", "cnn", "--aggregate", extra=FAST + " --data.batch_size=32"
        )
        == 1
    )
    assert "disagrees with" in rows(tmp_path)[0]["error"]  # the other run's times differ from the record's
    # ... and with every figure copied from that run (the same model and seed, another recipe): its stamp says
    # so
    other = tmp_path / "lightning_logs/cnn/version_0"
    record["row"] = {**json.loads((other / "metrics.json").read_text()), "run_dir": str(other)}
    record_file.write_text(json.dumps(record))
    for args in ((), ("--aggregate",)):
        assert (
            bench(synthetic_data, tmp_path, "--models", "cnn", *args, extra=FAST + " --data.batch_size=32")
            == 1
        )
        (row,) = rows(tmp_path)
        assert row["status"] == "failed" and "the recipe" in row["error"], row
    (
        other / "benchmark_key.txt"
    ).unlink()  # a run the benchmark did not make: trained again, or failed if aggregated
    assert (
        bench(
            synthetic_data, tmp_path, "--models", "cnn", "--aggregate", extra=FAST + " --data.batch_size=32"
        )
        == 1
    )
    assert "the benchmark did not make it" in rows(tmp_path)[0]["error"]
    # an honest record is reused as it was
    record["row"] = dict(honest)
    record_file.write_text(json.dumps(record))
    assert bench(synthetic_data, tmp_path, "--models", "cnn", extra=FAST + " --data.batch_size=32") == 0
    assert rows(tmp_path)[0]["test/acc"] == truth and versions(tmp_path) == ["version_0", "version_1"]
    # the figure edited in the run's own metrics.json too: its per-image predictions say otherwise
    metrics_file = tmp_path / "lightning_logs/cnn/version_1/metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**metrics, "test/acc": 0.9999}))
    record["row"]["test/acc"] = 0.9999
    record_file.write_text(json.dumps(record))
    assert (
        bench(
            synthetic_data, tmp_path, "--models", "cnn", "--aggregate", extra=FAST + " --data.batch_size=32"
        )
        == 1
    )
    (row,) = rows(tmp_path)
    assert row["status"] == "failed" and "test_predictions.npz gives" in row["error"], row
    # a status that is not "ok" carries no figure into the results, whatever it says
    for status in ("OK", "failed", None):
        record["row"] = {**honest, "status": status, "test/acc": 0.9999}
        record_file.write_text(json.dumps(record))
        assert (
            bench(
                synthetic_data,
                tmp_path,
                "--models",
                "cnn",
                "--aggregate",
                extra=FAST + " --data.batch_size=32",
            )
            == 1
        )
        (row,) = rows(tmp_path)
        assert row["status"] == "failed" and row.get("test/acc") is None, row
        assert "0.9999" not in (tmp_path / "results/benchmark.csv").read_text()


@pytest.mark.parametrize("value", ["abc", None, True, float("nan"), 1.5, -0.1, [0.9]])
def test_a_row_whose_figures_are_not_numbers_is_failed(value):
    from mnist_bench.benchmark.report.aggregate import summarize

    row = {"model": "cnn", "seed": 42, "status": "ok", "test/acc": 0.99, "time/fit_s": 10.0}
    (ok,) = summarize([row])
    assert ok["status"] == "ok"
    (bad,) = summarize([{**row, "test/acc": value}])
    assert bad["status"] == "failed" and "test/acc" in bad["error"], bad


def test_an_edited_speed_in_a_record_is_never_reported(synthetic_data, tmp_path, capsys):
    """Seed units and the run's wall time are not in the run's metrics.json: a reused row's fit su is computed
    from the run's own fit time and a seed unit this machine measured, and a wall time below the fit's is a
    failed row."""
    from mnist_bench.benchmark import seed_unit

    assert bench(synthetic_data, tmp_path, "--models", "cnn") == 0
    record_file = tmp_path / "results/runs/cnn-seed42.json"
    record = json.loads(record_file.read_text())
    fit_s = json.loads((Path(record["row"]["run_dir"]) / "metrics.json").read_text())["time/fit_s"]
    here = seed_unit.machine(torch.device("cpu"))
    seed_unit.remember(here, 100.0, "2026-12-04 12:00:00 UTC")  # the unit this machine really measured
    for unit, expected in ((100.0, round(fit_s / 100.0, 3)), (1.0, None)):
        record["seed_unit_s"] = unit
        record["row"].update({"seed_unit_s": unit, "time/fit_su": 0.5})
        record_file.write_text(json.dumps(record))
        assert bench(synthetic_data, tmp_path, "--models", "cnn", "--aggregate") == 0
        (row,) = rows(tmp_path)
        assert row["status"] == "ok" and row["time/fit_su"] == expected, (unit, row["time/fit_su"])
        assert "1.0 s" not in (tmp_path / "results/benchmark.md").read_text()
    record["row"]["time/run_s"] = fit_s / 10
    record_file.write_text(json.dumps(record))
    assert bench(synthetic_data, tmp_path, "--models", "cnn", "--aggregate") == 1
    (row,) = rows(tmp_path)
    assert row["status"] == "failed" and "time/run_s" in row["error"], row
    capsys.readouterr()
    assert bench(synthetic_data, tmp_path, "--models", "cnn") == 1  # not "done before": refused, and why
    out = capsys.readouterr().out
    assert "its record is refused" in out and "time/run_s" in out and "done before" not in out, out
