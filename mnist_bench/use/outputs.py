"""What ``predict`` and ``export`` may write over, decided before any work: never an input or a checkpoint
(whatever the flags), another existing file only with ``--overwrite``. Paths are compared as files
(``samefile``), so a link, a hard link or another spelling of the same file is the same file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

OVERWRITE_FLAG = "--overwrite"
NEVER_REPLACED = "an input or a checkpoint is never written over, whatever the flags"
OVERWRITE_HELP = "replace output files that already exist (an input or a checkpoint is never replaced)"


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_checkpoint(path: Path) -> bool:
    """A ``.ckpt`` file, by its own name or the name of the file a link leads to."""
    return path.suffix == ".ckpt" or path.resolve().suffix == ".ckpt"


def owned(path: Path, inputs: Iterable[Path], checkpoint: Path | None) -> str | None:
    """Why the existing file ``path`` is never written over (an input or a checkpoint), else None."""
    if not path.exists():
        return None
    if checkpoint is not None and same_file(path, checkpoint) or is_checkpoint(path):
        return "is a checkpoint"
    taken = next((p for p in inputs if same_file(path, p)), None)
    return None if taken is None else f"is the input {taken}"


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing folder above ``path`` when it is a file (so ``path`` cannot be made), else None."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
