"""Numeric precision chosen from the hardware, unless the config or command line names one.

CUDA with native bf16 (compute capability 8.0 and up: A100, H100, RTX 30xx) -> ``bf16-mixed``; older CUDA
cards (T4, V100) -> ``16-mixed``; a CPU with native bf16 (AVX-512 BF16 or AMX) -> ``bf16-mixed`` for the
models that gain from it, else ``32-true``. Without native bf16, a CPU emulates bf16 autocast, and the CNN
trained 9x slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

AUTO = "auto"


@dataclass(frozen=True)
class Hardware:
    """What precision depends on: the device kind, its name, and for a CPU its vector capability."""

    kind: str  # "cuda" or "cpu"
    name: str  # the GPU's name, or the CPU capability (AMX, AVX512_BF16, AVX512, AVX2, DEFAULT)
    native_bf16: bool
    cuda_capability: tuple[int, int] | None = None

    @property
    def description(self) -> str:
        if self.kind == "cuda":
            major, minor = self.cuda_capability or (0, 0)
            return f"{self.name} (sm_{major}{minor})"
        return f"CPU {self.name}"


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_capability(flags: frozenset[str] | None = None, torch_capability: str | None = None) -> str:
    """AMX, AVX512_BF16, AVX512, AVX2 or torch's own word (DEFAULT, VSX, SVE256, ...) for this CPU. The bf16
    instructions count only where torch uses AVX-512 (``ATEN_CPU_CAPABILITY=avx2`` makes a CPU behave as
    AVX2)."""
    flags = _cpu_flags() if flags is None else flags
    torch_capability = (
        torch.backends.cpu.get_cpu_capability() if torch_capability is None else torch_capability
    )
    if not torch_capability.startswith("AVX512"):
        return torch_capability
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512_BF16"
    return torch_capability


def detect(accelerator: str = "auto") -> Hardware:
    """The hardware a run with this ``trainer.accelerator`` will use."""
    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        return Hardware("cuda", torch.cuda.get_device_name(0), major >= 8, (major, minor))
    capability = cpu_capability()
    return Hardware("cpu", capability, capability in ("AMX", "AVX512_BF16"))


def resolve(
    requested: str | int | None, hardware: Hardware, bf16_on_cpu: bool, mixed_precision: bool = True
) -> tuple[str, str]:
    """The precision a run uses and one line on why. ``requested`` wins unless it is None or ``auto``;
    ``bf16_on_cpu`` says whether the model was measured faster in bf16 on a CPU with native bf16;
    ``mixed_precision`` False keeps a model in fp32 everywhere."""
    if requested is not None and str(requested) != AUTO:
        return str(requested), f"precision {requested} as configured"
    where = hardware.description
    if not mixed_precision:
        return "32-true", f"precision 32-true on {where}: this model runs in fp32"
    if hardware.kind == "cuda":
        if hardware.native_bf16:
            return "bf16-mixed", f"precision bf16-mixed: {where} has native bf16"
        return "16-mixed", f"precision 16-mixed: {where} has no native bf16 (fp16 is its fast path)"
    if not hardware.native_bf16:
        return (
            "32-true",
            f"precision 32-true: {where} has no native bf16 (bf16 would be emulated, about 9x slower)",
        )
    if bf16_on_cpu:
        return "bf16-mixed", f"precision bf16-mixed: {where} has native bf16"
    return "32-true", f"precision 32-true: this model was measured faster in fp32 than in bf16 on {where}"
