"""`mnist-bench sweep` on synthetic data: trials that finish and one that is pruned, the best config trained
again, two workers sharing one storage, a killed worker's sweep continued, a real PostgreSQL server, and bad
spaces."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mnist_bench.cli import main as cli_main
from mnist_bench.data.synthetic import write_synthetic_mnist
from mnist_bench.sweep.main import main as sweep_main

from ..conftest import ROOT

optuna = pytest.importorskip("optuna")

CNN_CONFIG = str(ROOT / "configs" / "cnn.yaml")
# every trial: a tiny CNN, two short epochs on the synthetic strokes
FIT = [
    "--data.val_size=100",
    "--data.batch_size=20",
    "--data.eval_batch_size=100",
    "--trainer.max_epochs=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
    "--model.init_args.channels=[8]",
    "--model.init_args.hidden=16",
]


def space_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def sweep_args(tmp_path: Path, data: Path, space: str, trials: int, *extra: str) -> list[str]:
    return [
        "--config",
        CNN_CONFIG,
        "--space",
        space,
        "--trials",
        str(trials),
        "--study",
        "tiny",
        "--results",
        str(tmp_path / "results"),
        "--runs_dir",
        str(tmp_path / "runs"),
        "--data_dir",
        str(data),
        *extra,
        "--",
        *FIT,
    ]


def load(tmp_path: Path, storage: str | None = None):
    url = storage or f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    return optuna.load_study(study_name="tiny", storage=url)


GRID_WITH_A_HOPELESS_RATE = """
objective: val/acc
direction: maximize
sampler: {name: grid}
pruner: {name: threshold, lower: 0.3, n_warmup_steps: 1}
params:
  model.init_args.scheduler.init_args.max_lr: {choices: [1.0e-9, 0.01]}
"""


def test_a_tiny_sweep_finishes_prunes_and_its_best_config_trains(synthetic_data, tmp_path, capsys):
    space = space_file(tmp_path, GRID_WITH_A_HOPELESS_RATE)
    assert sweep_main(sweep_args(tmp_path, synthetic_data, space, 2)) == 0
    study = load(tmp_path)
    states = {t.params["model.init_args.scheduler.init_args.max_lr"]: t.state.name for t in study.trials}
    assert states == {1e-9: "PRUNED", 0.01: "COMPLETE"}, (
        "the rate that learns nothing is stopped after epoch 2"
    )
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    assert pruned.intermediate_values and max(pruned.intermediate_values.values()) < 0.3
    best = study.best_trial
    metrics = json.loads((Path(best.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert best.value == pytest.approx(metrics["history"][-1]["val/acc"]) and best.value > 0.3
    pruned_metrics = json.loads((Path(pruned.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert pruned_metrics["status"] == "pruned"

    results = tmp_path / "results"
    table = (results / "sweep.md").read_text()
    assert "| 0 |" in table and "| 1 |" in table and "pruned" in table and "**best**" in table
    assert (results / "sweep.csv").read_text().startswith("trial,state,")
    assert (results / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert list((results / "tensorboard").rglob("events.out.tfevents.*")), "HPARAMS for TensorBoard"
    assert "best: trial" in capsys.readouterr().out

    best_yaml = results / "best.yaml"
    assert "max_lr: 0.01" in best_yaml.read_text()
    cli_main(
        [
            "fit",
            "--config",
            str(best_yaml),
            f"--trainer.default_root_dir={tmp_path / 'again'}",
            "--trainer.max_epochs=1",
        ]
    )
    again = next((tmp_path / "again" / "lightning_logs" / "cnn").glob("version_*/metrics.json"))
    assert json.loads(again.read_text())["status"] == "ok"


def test_a_sweep_on_another_dataset_takes_its_overlay_after_the_double_dash(tmp_path):
    write_synthetic_mnist(tmp_path / "data", n_train=300, n_test=50, dataset="fashion_mnist")
    space = space_file(tmp_path, RANDOM)
    overlay = str(ROOT / "configs" / "data" / "fashion_mnist.yaml")
    assert sweep_main([*sweep_args(tmp_path, tmp_path / "data", space, 1), "--config", overlay]) == 0
    (trial,) = load(tmp_path).trials
    metrics = json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["config"]["data"]["init_args"]["dataset"] == "fashion_mnist"
    assert "dataset: fashion_mnist" in (tmp_path / "results" / "best.yaml").read_text()


RANDOM = """
sampler: {name: random}
pruner: none
params:
  model.init_args.scheduler.init_args.max_lr: {low: 1.0e-3, high: 3.0e-2, log: true}
"""


def _worker(tmp_path: Path, data: Path, space: str, trials: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_bench", "sweep", *sweep_args(tmp_path, data, space, trials, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )


def test_two_workers_share_one_storage_and_finish_the_count_between_them(synthetic_data, tmp_path):
    space = space_file(tmp_path, RANDOM)
    workers = [_worker(tmp_path, synthetic_data, space, 4, "--seed", str(k)) for k in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = load(tmp_path).trials
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(finished) == 4 and len({t.number for t in trials}) == len(trials)
    hosts = {(t.user_attrs["worker"]["pid"]) for t in finished}
    assert len(hosts) == 2, "both workers ran trials"
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    assert all("surplus" in t.user_attrs.get("error", "") for t in trials if t.state.name == "FAIL")


def test_a_killed_sweep_continues_where_it_stopped(synthetic_data, tmp_path):
    space = space_file(tmp_path, RANDOM)
    worker = _worker(tmp_path, synthetic_data, space, 3)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # kill it while its second trial trains
        time.sleep(0.5)
        if not (tmp_path / "results" / "optuna.db").exists():
            continue
        try:
            running = [t for t in load(tmp_path).trials if t.state.name == "RUNNING" and t.number == 1]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        if running:
            break
    else:
        worker.kill()
        pytest.fail("the worker never started its second trial")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(1.0)
    assert sweep_main(sweep_args(tmp_path, synthetic_data, space, 3)) == 0
    trials = load(tmp_path).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    killed = next(t for t in trials if t.number == 1)
    assert killed.state.name == "FAIL" and killed.user_attrs["error"] == "its worker was killed"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert retried and retried[0].state.name == "COMPLETE" and retried[0].params == killed.params


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server on loopback in a temporary folder, stopped after the test."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    as_user: list[str] = []
    # outside pytest's folders, which only their owner may enter
    home = Path(tempfile.mkdtemp(prefix="mnist-bench-pg-"))
    data = home / "pg"
    data.mkdir()
    if os.geteuid() == 0:  # the server refuses to run as root: as the postgres user Debian's package creates
        if shutil.which("runuser") is None:
            shutil.rmtree(home)
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
        os.chmod(home, 0o755)
    port = _free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "bench", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *as_user,
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "bench",
                "optuna",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://bench@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


def test_a_sweep_on_a_real_postgresql_server(synthetic_data, tmp_path, postgres):
    space = space_file(tmp_path, RANDOM)
    assert sweep_main(sweep_args(tmp_path, synthetic_data, space, 2, "--storage", postgres)) == 0
    study = load(tmp_path, postgres)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    assert "postgresql://bench@127.0.0.1" in (tmp_path / "results" / "sweep.md").read_text()
    assert not (tmp_path / "results" / "optuna.db").exists(), "nothing was written to the default SQLite file"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: {}", "needs a params mapping"),
        ("params: {model.init_args.dropout: {low: 0.5, high: 0.1}}", "low 0.5 must be below high 0.1"),
        ("params: {model.init_args.dropout: {low: 0, high: 1, log: true}}", "log range needs low > 0"),
        ("direction: up\nparams: {model.init_args.hidden: {choices: [1]}}", "direction 'up'"),
        (
            "sampler: {name: anneal}\nparams: {model.init_args.hidden: {choices: [1]}}",
            "sampler 'anneal' is unknown",
        ),
        (
            "sampler: {name: tpe, n_startup_trials: '3'}\nparams: {model.init_args.hidden: {choices: [1]}}",
            "n_startup_trials is '3' (str). Fix: a value of type int",
        ),
        (
            "pruner: {name: median, n_warmup_steps: true}\nparams: {model.init_args.hidden: {choices: [1]}}",
            "n_warmup_steps is True (bool)",
        ),
        (
            "params: {model.init_args.hidden: {choices: [1]}}\nobjectives: [x]",
            "unknown entries ['objectives']",
        ),
        ("params: [", "not valid YAML"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file(text, message, tmp_path, capsys):
    space = space_file(tmp_path, text)
    assert sweep_main(sweep_args(tmp_path, tmp_path, space, 1)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "space.yaml" in err


def test_a_trial_whose_config_is_wrong_stops_the_sweep_with_its_message(synthetic_data, tmp_path, capsys):
    space = space_file(tmp_path, "params: {model.init_args.dropout: {choices: [7.0]}}")
    assert sweep_main(sweep_args(tmp_path, synthetic_data, space, 3)) == 2
    err = capsys.readouterr().err
    assert "trial 0 stopped at its config" in err and "dropout" in err
    assert len(load(tmp_path).trials) == 1, "no trial is started after a config error"


def test_a_grid_never_passes_its_high_end():
    from mnist_bench.sweep.space import load_space

    path = Path(tempfile.mkdtemp()) / "grid.yaml"
    path.write_text(
        "params: {data.batch_size: {low: 1, high: 10, step: 6}, "
        "model.init_args.dropout: {low: 0.5, high: 2.5, step: 1}}"
    )
    grid = load_space(path).grid()
    assert grid == {"data.batch_size": [1, 7], "model.init_args.dropout": [0.5, 1.5, 2.5]}
    shutil.rmtree(path.parent)


def test_of_two_workers_asking_at_once_only_the_later_trial_gives_way():
    from mnist_bench.sweep.study import ahead_of

    study = optuna.create_study()
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    first, second = study.ask(), study.ask()  # both running: trials 2 and 3, and 3 are wanted
    assert ahead_of(study, first.number) == 2, "trial 2 comes after the two finished ones: it runs"
    assert ahead_of(study, second.number) == 3, "trial 3 comes after 3 finished or running ones: it gives way"


def test_ab_refuses_one_label_twice_and_skips_models_without_a_shared_seed(tmp_path, capsys):
    from mnist_bench.benchmark.experiments.ab import compare_benchmarks
    from mnist_bench.benchmark.experiments.ab import main as ab_main

    rows_a = [
        {"model": "cnn", "seed": 42, "status": "ok", "test/acc": 0.99, "time/fit_s": 1.0},
        {"model": "vit", "seed": 42, "status": "ok", "test/acc": 0.98, "time/fit_s": 1.0},
    ]
    rows_b = [
        {"model": "cnn", "seed": 42, "status": "ok", "test/acc": 0.99, "time/fit_s": 1.0},
        {"model": "vit", "seed": 43, "status": "ok", "test/acc": 0.98, "time/fit_s": 1.0},
    ]
    assert [s["model"] for s in compare_benchmarks(rows_a, rows_b, "a", "b")["summary"]] == ["cnn"]
    for name, rows in (("x", rows_a), ("y", rows_b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "benchmark.json").write_text(json.dumps({"rows": rows}))
    assert (
        ab_main(
            [
                "--a",
                str(tmp_path / "x"),
                "--b",
                str(tmp_path / "y"),
                "--labels",
                "on",
                "on",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "different labels" in capsys.readouterr().err
