"""Freed memory kept in the process on Linux (glibc), so that a training step does not fault its pages in
again.

glibc's malloc serves each block over its mmap threshold (32 MiB at most) with a fresh mapping and unmaps it
on free; every page of a fresh mapping faults on first touch, and VGG16's 32-px activations at batch 128 are
such blocks, made and freed at every step. With mmap off and a high trim threshold the heap keeps freed blocks
for the next step, as the allocators PyTorch's CPU tuning guide recommends (jemalloc, tcmalloc) do. Measured
in ``results/vgg16_avx2/``. ``MNIST_BENCH_KEEP_FREED_MEMORY=0`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

VARIABLE = "MNIST_BENCH_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
OFF = ("0", "false", "no", "off")  # the variable's values that keep glibc's defaults
TRIM_THRESHOLD = (1 << 31) - 1  # freed memory at the heap's top goes back to the kernel only past 2 GiB

_state: str | None = None


def keep_freed_memory() -> str:
    """Turns glibc's unmapping of large freed blocks off for this process, once; says what the process
    uses."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def _apply() -> str:
    given = os.environ.get(VARIABLE, "1")
    if given.strip().lower() in OFF:
        return f"default ({VARIABLE}={given})"
    if not sys.platform.startswith("linux"):
        return "default (not Linux)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default (no glibc mallopt)"
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "default (mallopt refused)"
    return "freed memory kept (glibc mallopt)"


def state() -> str:
    """What this process uses, without changing it."""
    return _state or "default"
