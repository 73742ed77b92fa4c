"""Two per-step costs that Lightning adds on a small model, removed; the only speed tweaks outside the models.

Both keep behaviour as it is and pay on every machine without NVML or a profiler, where a small model's
whole step is a few milliseconds (measured: results/overhead.json, docs/performance.md):

* ``skip_nvml_probe_without_nvml``: Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import (since
  Lightning-AI/pytorch-lightning#15110), so ``torch.cuda.is_available()`` asks NVML; without an NVIDIA driver
  torch then fails to load the library on every call, and Adam/AdamW call it every step. There the variable
  is turned off. Removable when Lightning stops setting it or torch caches the failed load (no upstream issue
  yet).
* ``NoProfiler``: Lightning enters ``profiler.profile(...)`` around each of about 70 hook calls a step; the
  default ``PassThroughProfiler`` builds a generator-based context manager each time (per-step overhead was
  closed as intended upstream: Lightning-AI/pytorch-lightning#6196). ``--trainer.profiler`` still replaces it.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import AbstractContextManager, nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
_NOTHING = nullcontext()


def skip_nvml_probe_without_nvml() -> None:
    """Turns torch's NVML-based CUDA check off where NVML cannot load (same answers, no failed load per
    call)."""
    if os.environ.get(NVML_CHECK) != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ[NVML_CHECK] = "0"


class NoProfiler(PassThroughProfiler):
    """Lightning's default ``PassThroughProfiler`` with a ``profile()`` that builds nothing."""

    def profile(self, action_name: str) -> AbstractContextManager:
        return _NOTHING
