"""A full disk ends the run with one line and leaves no half-written file that a reader would take as valid."""

import errno
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_bench.utils import read_json, write_json_atomic

from .conftest import ROOT


def _limit_file_size(max_bytes: int):
    def apply() -> None:
        # a write past the limit fails with EFBIG, as on a full disk, instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_checkpoint_write_failure_ends_the_run_with_a_message(synthetic_data, tmp_path):
    args = ["fit", "--config", str(ROOT / "configs/cnn.yaml"), f"--data.data_dir={synthetic_data}",
            "--data.val_size=100", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.precision=32-true"]
    # the CNN's checkpoint (weights and AdamW state) is about 5 MB; logs and metrics.json are a few kB
    proc = subprocess.run([sys.executable, "-m", "mnist_bench", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, preexec_fn=_limit_file_size(512 * 1024))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("mnist-bench: could not write") and "File too large" in message
    run = tmp_path / "lightning_logs/cnn/version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["test/acc"] is None
    assert "File too large" in metrics["error"]
    assert not list(run.glob("checkpoints/*.ckpt")), "no checkpoint, complete or half-written"


def test_failed_json_write_keeps_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"status": "ok", "test/acc": 0.99})

    def half_then_full(self: Path, text: str, *args, **kwargs) -> int:
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"status": "ok", "test/acc": 0.5, "padding": "x" * 1000})
    monkeypatch.undo()
    assert read_json(path) == {"status": "ok", "test/acc": 0.99}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
