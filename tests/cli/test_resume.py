import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from ..conftest import ROOT


def _fit_cmd(data_dir, root, *extra):
    return [
        sys.executable,
        "-m",
        "mnist_bench",
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={data_dir}",
        "--data.val_size=500",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def bigger_synthetic(tmp_path_factory):
    from mnist_bench.data.synthetic import write_synthetic_mnist

    data_dir = tmp_path_factory.mktemp("bigger")
    write_synthetic_mnist(data_dir, n_train=8000, n_test=500)
    return data_dir


def test_killed_run_resumes_in_its_run_dir(bigger_synthetic, tmp_path):
    """A real SIGKILL after the first epoch's checkpoint, then --ckpt_path last: same dir, same epoch and step
    counts as an uninterrupted run, close metrics, and the clock carries on."""
    straight = tmp_path / "straight"
    subprocess.run(_fit_cmd(bigger_synthetic, straight), check=True, capture_output=True, timeout=300)
    reference = json.loads((straight / "lightning_logs/cnn/version_0/metrics.json").read_text())

    killed = tmp_path / "killed"
    run = killed / "lightning_logs/cnn/version_0"
    proc = subprocess.Popen(
        _fit_cmd(bigger_synthetic, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while (
        not (run / "checkpoints/last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "metrics.json").exists()

    done = subprocess.run(
        _fit_cmd(bigger_synthetic, killed, "--ckpt_path=last"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr
    assert not (killed / "lightning_logs/cnn/version_1").exists()
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["epochs"] == reference["epochs"] == 3
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    ref_ckpt = torch.load(
        straight / "lightning_logs/cnn/version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=True
    )
    assert ckpt["global_step"] == ref_ckpt["global_step"] and ckpt["epoch"] == ref_ckpt["epoch"]
    # the resumed epochs drew the same batch order, augmentation and dropout: the same weights, the same score
    for key, value in ref_ckpt["state_dict"].items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=1e-5, msg=key)
    assert resumed["test/acc"] == reference["test/acc"]
    # the timing state came back from the checkpoint: images and seconds of the first epoch are counted too
    timing = next(v for k, v in ckpt["callbacks"].items() if "TimingCallback" in k)
    ref_timing = next(v for k, v in ref_ckpt["callbacks"].items() if "TimingCallback" in k)
    assert timing["train_images"] == ref_timing["train_images"] == 3 * 7500
    assert len(timing["epoch_s"]) == 3


def test_nothing_to_resume_is_a_clear_error(tmp_path, synthetic_data):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_bench",
            "fit",
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            "--ckpt_path=last",
            f"--data.data_dir={synthetic_data}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "nothing to resume" in proc.stderr


class _Payload:
    """Unpickling this calls open(path, "w"): the file appears if the checkpoint's pickle is ever executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_checkpoint_with_a_pickle_payload_is_refused(subcommand, synthetic_data, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save(
        {
            "state_dict": {},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": {"x": _Payload(marker)},
        },
        evil,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_bench",
            subcommand,
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={synthetic_data}",
            "--data.val_size=100",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            f"--ckpt_path={evil}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("mnist-bench: checkpoint") and "evil.ckpt refused" in message
    assert not marker.exists(), "the checkpoint's payload ran"


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing"])
def test_damaged_or_missing_checkpoint_is_one_line(damage, synthetic_data, tmp_path, capsys):
    from mnist_bench.cli import main

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, good)
    bad = tmp_path / f"{damage}.ckpt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[:500])
    elif damage == "empty":
        bad.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/cnn.yaml"),
                f"--data.data_dir={synthetic_data}",
                f"--trainer.default_root_dir={tmp_path}",
                f"--ckpt_path={bad}",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and "Traceback" not in "\n".join(err)
    expected = "not found" if damage == "missing" else "is damaged or not a checkpoint"
    assert err[-1].startswith(f"mnist-bench: checkpoint {bad}") and expected in err[-1]
