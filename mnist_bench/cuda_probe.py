"""``torch.cuda.is_available()`` without a failed NVML load on every call, on machines that have no NVML."""

from __future__ import annotations

import ctypes
import os

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_nvml_probe_without_nvml() -> None:
    """Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when it is imported, so that ``torch.cuda.is_available()``
    asks NVML (which does not spoil a later fork) rather than the CUDA runtime. On a machine without NVML (no NVIDIA
    driver) torch then tries to load the library on every call, fails, and asks the CUDA runtime anyway; Adam and
    AdamW make that call on every step, about 0.3 ms each on a 2-core CPU (2-3% of the CNN's step). There the
    variable is turned off: the same answers, without the failed load. Machines with NVML are left as they are.
    """
    if os.environ.get(NVML_CHECK) != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ[NVML_CHECK] = "0"
