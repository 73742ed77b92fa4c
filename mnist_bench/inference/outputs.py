"""What ``predict``, ``export`` and ``benchmark.ab`` may write over, decided before any work: never an input,
a checkpoint, a run folder's own files or a benchmark's reuse record (whatever the flags), another existing
file only with ``--overwrite``. Paths are compared as files
(``samefile``), so a link, a hard link or another spelling of the same file is the same file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

OVERWRITE_FLAG = "--overwrite"
NEVER_REPLACED = "an input, a checkpoint or a run's own file is never written over, whatever the flags"
OVERWRITE_HELP = "replace output files that already exist (an input or a checkpoint is never replaced)"


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_checkpoint(path: Path) -> bool:
    """A ``.ckpt`` file, by its own name or the name of the file a link leads to."""
    return path.suffix == ".ckpt" or path.resolve().suffix == ".ckpt"


def run_folder_of(path: Path) -> Path | None:
    """The run folder (``config.yaml`` beside ``checkpoints/`` or ``metrics.json``) that holds ``path``,
    directly or in its ``checkpoints/``, else None."""
    for folder in (path.resolve().parent, path.resolve().parent.parent):
        if (folder / "config.yaml").is_file() and (
            (folder / "checkpoints").is_dir() or (folder / "metrics.json").is_file()
        ):
            return folder
    return None


def is_reuse_record(path: Path) -> bool:
    """A benchmark's record of a finished run (``<results>/runs/<model>-seed<n>.json``)."""
    if path.suffix != ".json" or path.resolve().parent.name != "runs":
        return False
    try:
        return isinstance(record := json.loads(path.read_text()), dict) and "row" in record
    except (OSError, ValueError):
        return False


def owned(path: Path, inputs: Iterable[Path], checkpoint: Path | None) -> str | None:
    """Why the existing file ``path`` is never written over (an input, a checkpoint, a file of a run folder or
    a benchmark's reuse record), else None."""
    if not path.exists():
        return None
    if checkpoint is not None and same_file(path, checkpoint) or is_checkpoint(path):
        return "is a checkpoint"
    taken = next((p for p in inputs if same_file(path, p)), None)
    if taken is not None:
        return f"is the input {taken}"
    if (run := run_folder_of(path)) is not None:
        return f"is a file of the run folder {run}"
    return "is a benchmark's record of a finished run" if is_reuse_record(path) else None


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing folder above ``path`` when it is a file (so ``path`` cannot be made), else
    None."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
