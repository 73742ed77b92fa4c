"""Helpers shared by the whole package: atomic writes (a reader never sees half a file), JSON, processes and
CPUs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary file beside ``path`` (same suffix) to write to; renamed onto ``path`` when the block
    ends without an error, removed in any case. It is created exclusively (``mkstemp``), so a link someone put
    at a temporary name is never written through; its mode is what ``open`` would give under the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


CPUS_VARIABLE = (
    "MNIST_BENCH_CPUS"  # a benchmark job's own CPU cores (python -m mnist_bench.benchmark --jobs N)
)


def pin_to_given_cpus() -> None:
    """Keeps this process (and the threads it starts later) on the cores ``$MNIST_BENCH_CPUS`` names
    ("0,2,4")."""
    given = os.environ.get(CPUS_VARIABLE)
    if not given or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {int(c) for c in given.split(",") if c.strip()})
    except (ValueError, OSError) as err:
        raise SystemExit(
            f"mnist-bench: {CPUS_VARIABLE}={given!r} is not a list of this machine's cores ({err})"
        ) from None


def process_alive(pid: int, group: bool = False) -> bool:
    """Whether process ``pid`` (with ``group``, process group ``pid``) still exists; one of another user's
    counts."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
