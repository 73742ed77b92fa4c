"""What a trained model costs to run: FLOPs per image (torch's own FLOP counter), parameters, batch-1 latency
in PyTorch and in ONNX Runtime (median and 95th percentile after a warm-up), throughput at the benchmark's
evaluation batch, and the checkpoint's and the ONNX file's sizes. All on the CPU, with torch's and ONNX
Runtime's threads set to the same count."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

WARMUP_CALLS = 10
LATENCY_CALLS = 100
THROUGHPUT_BATCHES = 5


@dataclass
class CostSettings:
    warmup_calls: int = WARMUP_CALLS
    latency_calls: int = LATENCY_CALLS
    throughput_batches: int = THROUGHPUT_BATCHES
    batch_size: int = 1000
    onnx: bool = True


def flops_per_image(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (one image), as ``torch.utils.flop_counter`` counts them: 2
    per multiply-add of the convolutions and matrix products; element-wise operations and resizing are not
    counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example)
    return int(counter.get_total_flops())


def timed_calls(call: Callable[[], Any], warmup: int, calls: int) -> np.ndarray:
    """Wall seconds of each of ``calls`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times


def latency_ms(times: np.ndarray) -> dict[str, float]:
    return {"median_ms": float(np.median(times) * 1e3), "p95_ms": float(np.percentile(times, 95) * 1e3)}


def onnx_cost(
    model: nn.Module, ckpt_path: Path, example: np.ndarray, settings: CostSettings
) -> dict[str, Any]:
    """The model exported as ``mnist-bench export`` does (to a temporary file): its size and ONNX Runtime's
    batch-1 latency."""
    import onnxruntime as ort

    from mnist_bench.inference.export import export_onnx, metadata

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", metadata(model, str(ckpt_path)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        times = timed_calls(
            lambda: session.run(None, {name: example}), settings.warmup_calls, settings.latency_calls
        )
        return {"onnx_bytes": path.stat().st_size, "onnx_latency": latency_ms(times)}


def measure_cost(model: nn.Module, ckpt_path: Path, settings: CostSettings) -> dict[str, Any]:
    """Every cost figure of one trained model (in eval mode, on the CPU, float32)."""
    model = model.cpu().eval()
    size = model.dataset.image_size
    one = torch.zeros(1, 1, size, size)
    batch = torch.zeros(settings.batch_size, 1, size, size)
    with torch.no_grad():
        times = timed_calls(lambda: model.class_scores(one), settings.warmup_calls, settings.latency_calls)
        batches = timed_calls(lambda: model.class_scores(batch), 1, settings.throughput_batches)
    out: dict[str, Any] = {
        "flops": flops_per_image(model, one),
        "params": int(sum(p.numel() for p in model.parameters())),
        "latency": latency_ms(times),
        "throughput_img_s": float(settings.batch_size / np.median(batches)),
        "batch_size": settings.batch_size,
        "checkpoint_bytes": ckpt_path.stat().st_size,
        "threads": torch.get_num_threads(),
        "settings": asdict(settings),
    }
    if settings.onnx:
        out.update(onnx_cost(model, ckpt_path, one.numpy(), settings))
    return out
