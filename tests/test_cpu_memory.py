"""Freed memory kept in the process (mnist_bench/cpu_memory.py): a large tensor comes from the heap, not from
a mapping of its own that is unmapped on free and faulted in again at the next step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, sys
from mnist_bench.cpu_memory import keep_freed_memory, state
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print(json.dumps({"skip": "no mallinfo2 (glibc before 2.33)"})); sys.exit()
libc.mallinfo2.restype = MallInfo2
told = keep_freed_memory()
before = libc.mallinfo2()
block = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MiB: above glibc's largest mmap threshold
live = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(json.dumps({"told": told, "state": state(), "mapped_while_live": live.hblkhd - before.hblkhd,
                  "heap_free_after": freed.fordblks - before.fordblks}))
"""


def _probe(keep: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MNIST_BENCH_KEEP_FREED_MEMORY"}
    if keep is not None:
        env["MNIST_BENCH_KEEP_FREED_MEMORY"] = keep
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_a_large_block_comes_from_the_heap_and_stays_there_after_free():
    kept, default = _probe(None), _probe("0")
    if "skip" in kept:
        pytest.skip(kept["skip"])
    assert kept["told"] == kept["state"] == "freed memory kept (glibc mallopt)"
    assert kept["mapped_while_live"] == 0, "the 64 MiB block got a mapping of its own"
    assert kept["heap_free_after"] >= 60 << 20, (
        "the freed block went back to the kernel"
    )  # (merged with free chunks)
    # glibc's default: the same block is a mapping of its own, unmapped on free
    assert default["told"] == default["state"] == "default (MNIST_BENCH_KEEP_FREED_MEMORY=0)"
    assert default["mapped_while_live"] >= 64 << 20
    assert default["heap_free_after"] < 60 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
@pytest.mark.parametrize("value", ["false", " OFF ", "no"])
def test_the_variable_turns_it_off_in_words_too(value):
    seen = _probe(value)
    if "skip" in seen:
        pytest.skip(seen["skip"])
    assert seen["state"] == f"default (MNIST_BENCH_KEEP_FREED_MEMORY={value})"
