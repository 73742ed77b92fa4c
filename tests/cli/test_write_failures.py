"""A full disk ends the run with one line and leaves no half-written file that a reader would take as
valid."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_bench.utils import read_json, write_json_atomic

from ..conftest import ROOT


def _limit_file_size(max_bytes: int):
    def apply() -> None:
        # a write past the limit fails with EFBIG, as on a full disk, instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_checkpoint_write_failure_ends_the_run_with_a_message(synthetic_data, tmp_path):
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={synthetic_data}",
        "--data.val_size=100",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.precision=32-true",
    ]
    # the CNN's checkpoint (weights and AdamW state) is about 5 MB; logs and metrics.json are a few kB
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_bench", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        preexec_fn=_limit_file_size(512 * 1024),
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("mnist-bench: could not write") and "File too large" in message
    assert message.endswith("no epoch was checkpointed yet, so there is nothing to resume)"), message
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


class _FillingFile:
    """A file on a disk with ``room`` bytes left: what fits is written, then ENOSPC (as the kernel does)."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def test_a_disk_that_fills_during_a_checkpoint_leaves_the_last_complete_one(
    synthetic_data, tmp_path, monkeypatch, capsys
):
    """The run's disk fills while the second epoch's checkpoint is written; the system's temporary folder is
    on another disk, with room."""
    import builtins
    import os
    import shutil
    import tempfile

    import torch

    from mnist_bench.cli import main

    runs, other_disk = tmp_path / "runs", tmp_path / "system_tmp"
    other_disk.mkdir()
    checkpoints = runs / "lightning_logs/cnn/version_0/checkpoints"
    real_open, real_rename, opened = builtins.open, os.rename, []

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and isinstance(file, (str, os.PathLike)) and Path(file).parent == checkpoints:
            opened.append(Path(file).name)
            return _FillingFile(f, 1 << 60 if len(opened) == 1 else 64 * 1024)
        return f

    def rename_within_a_disk(src, dst, *args, **kwargs):
        if (other_disk in Path(src).parents) != (other_disk in Path(dst).parents):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk_open)
    monkeypatch.setattr(os, "rename", rename_within_a_disk)
    monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # copies go through the files' write()
    monkeypatch.setattr(tempfile, "tempdir", str(other_disk))
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={synthetic_data}",
        "--data.val_size=100",
        "--data.batch_size=100",
        "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.precision=32-true",
    ]
    with pytest.raises(SystemExit) as stopped:
        main(args)
    monkeypatch.undo()  # space is freed
    assert stopped.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"mnist-bench: could not write {checkpoints}: No space left on device"), message
    assert "--ckpt_path last" in message
    assert len(opened) >= 2, "the second checkpoint was written"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=0-step=5.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not list(other_disk.iterdir())
    main(["fit", *args[1:], "--ckpt_path=last"])  # resumes the run from its first epoch and finishes it
    metrics = json.loads((checkpoints.parent / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 2


def test_a_link_at_a_temporary_name_is_never_written_through(tmp_path):
    """A file is written to a fresh temporary file of its own, never to a fixed name someone could have put a
    link at (``.model.tmp.onnx`` -> a file outside the folder)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    for name in (".metrics.tmp.json", ".metrics.json.tmp", ".metrics.tmp"):
        (out / name).symlink_to(notes)
    write_json_atomic(out / "metrics.json", {"status": "ok"})
    assert notes.read_text() == "mine"
    assert not (out / "metrics.json").is_symlink() and read_json(out / "metrics.json") == {"status": "ok"}
    assert sorted(p.name for p in out.iterdir()) == [
        ".metrics.json.tmp",
        ".metrics.tmp",
        ".metrics.tmp.json",
        "metrics.json",
    ]
    mode = (out / "metrics.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # as a plain open() would have made it
