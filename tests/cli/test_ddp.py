"""DDP on the CPU (gloo) with two processes: launched by Lightning, by torchrun, and as two nodes on loopback.

Each run is a subprocess with a timeout, so a hang fails the test instead of stalling CI.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..conftest import ROOT

TIMEOUT_S = 240
N_TRAIN, N_VAL, N_TEST = 1000, 200, 300


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> Path:
    from mnist_bench.data.synthetic import write_synthetic_mnist

    data_dir = tmp_path_factory.mktemp("ddp_data")
    write_synthetic_mnist(data_dir, n_train=N_TRAIN, n_test=N_TEST)
    return data_dir


def _args(data_dir: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={data_dir}",
        f"--data.val_size={N_VAL}",
        "--data.eval_batch_size=64",
        "--trainer.max_epochs=2",
        "--trainer.precision=32-true",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.strategy=ddp",
        *extra,
    ]


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr, "a rank aborted on exit"
    return proc


def _one_metrics_json(root: Path) -> dict:
    found = list(root.rglob("metrics.json"))
    assert len(found) == 1, f"expected exactly one metrics.json, found {found}"
    return json.loads(found[0].read_text())


def _check_run(root: Path, data_dir: Path) -> None:
    metrics = _one_metrics_json(root)
    assert metrics["status"] == "ok" and metrics["epochs"] == 2
    run_dir = Path(metrics["run_dir"])
    # timing counts every rank's images: two epochs over the whole training split
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    timing = next(v for k, v in ckpt["callbacks"].items() if "TimingCallback" in k)
    assert timing["train_images"] == 2 * (N_TRAIN - N_VAL)
    # the test accuracy gathered over two ranks equals one process evaluating the same checkpoint
    single = root / "single"
    _run(
        [
            sys.executable,
            "-m",
            "mnist_bench",
            "test",
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={data_dir}",
            "--trainer.precision=32-true",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={single}",
            f"--ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        ],
        cwd=root,
    )
    reference = json.loads(next(single.rglob("metrics.json")).read_text())
    assert metrics["test/acc"] == reference["test/acc"]
    assert metrics["test/f1"] == pytest.approx(reference["test/f1"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(reference["test/loss"], rel=1e-4)
    # each test image's prediction, gathered from both ranks back into test-set order
    import numpy as np

    from mnist_bench.callbacks.predictions import read_predictions

    ranks = read_predictions(run_dir / "test_predictions.npz")
    alone = read_predictions(Path(reference["run_dir"]) / "test_predictions.npz")
    assert len(ranks["pred"]) == N_TEST
    for key in ("index", "target", "pred"):
        np.testing.assert_array_equal(ranks[key], alone[key])
    np.testing.assert_allclose(ranks["confidence"], alone["confidence"], atol=1e-3)


def test_lightning_launched_ddp_is_exact_and_writes_once(ddp_data, tmp_path):
    _run([sys.executable, "-m", "mnist_bench", *_args(ddp_data, "--trainer.devices=2")], cwd=tmp_path)
    _check_run(tmp_path, ddp_data)


def test_torchrun_launch(ddp_data, tmp_path):
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mnist_bench",
            *_args(ddp_data, "--trainer.devices=2"),
        ],
        cwd=tmp_path,
    )
    _check_run(tmp_path, ddp_data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback(ddp_data, tmp_path):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "LOCAL_RANK": "0"}
    cmd = [
        sys.executable,
        "-m",
        "mnist_bench",
        *_args(ddp_data, "--trainer.devices=1", "--trainer.num_nodes=2"),
    ]
    nodes = [
        subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env={**os.environ, **env, "NODE_RANK": str(rank), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        errors = [node.communicate(timeout=TIMEOUT_S)[1] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    assert not any("terminate called" in e for e in errors), "a node aborted on exit"
    _check_run(tmp_path, ddp_data)
