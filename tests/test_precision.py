"""Precision from the hardware: every branch with the probe replaced, and the resolved value in a real run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from mnist_bench import precision
from mnist_bench.precision import Hardware, cpu_capability, detect, resolve

from .conftest import ROOT

H100 = Hardware("cuda", "NVIDIA H100 80GB HBM3", True, (9, 0))
T4 = Hardware("cuda", "Tesla T4", False, (7, 5))
AVX512_BF16 = Hardware("cpu", "AVX512_BF16", True)
AMX = Hardware("cpu", "AMX", True)
AVX2 = Hardware("cpu", "AVX2", False)


@pytest.mark.parametrize(
    ("hardware", "bf16_on_cpu", "expected"),
    [
        (H100, False, "bf16-mixed"),  # every mixed-precision model on a bf16 card
        (T4, True, "16-mixed"),  # fp16 is a T4's fast path
        (AVX512_BF16, True, "bf16-mixed"),
        (AMX, True, "bf16-mixed"),
        (AVX512_BF16, False, "32-true"),  # a model measured slower in bf16 on the CPU (the ViT)
        (AVX2, True, "32-true"),  # emulated bf16 costs 9x
        (AVX2, False, "32-true"),
    ],
)
def test_auto_precision_follows_the_hardware(hardware, bf16_on_cpu, expected):
    chosen, reason = resolve(None, hardware, bf16_on_cpu)
    assert chosen == expected
    assert chosen in reason and (hardware.name in reason)
    assert resolve("auto", hardware, bf16_on_cpu)[0] == expected


@pytest.mark.parametrize("hardware", [H100, T4, AVX512_BF16, AVX2])
def test_a_configured_precision_always_wins(hardware):
    assert resolve("bf16-mixed", hardware, False) == ("bf16-mixed", "precision bf16-mixed as configured")
    assert resolve("32-true", hardware, True)[0] == "32-true"
    assert resolve(64, hardware, True)[0] == "64"


@pytest.mark.parametrize("hardware", [H100, T4, AVX512_BF16, AVX2])
def test_an_fp32_model_stays_fp32(hardware):
    chosen, reason = resolve(None, hardware, True, mixed_precision=False)
    assert chosen == "32-true" and "fp32" in reason


@pytest.mark.parametrize(
    ("flags", "torch_word", "expected"),
    [
        ({"avx2", "avx512f", "amx_bf16", "amx_tile", "avx512_bf16"}, "AVX512", "AMX"),
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", "AVX512_BF16"),
        ({"avx2", "avx512f"}, "AVX512", "AVX512"),
        ({"avx2"}, "AVX2", "AVX2"),
        (set(), "DEFAULT", "DEFAULT"),
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX2", "AVX2"),  # ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU
    ],
)
def test_cpu_capability_from_the_flags(flags, torch_word, expected):
    assert cpu_capability(frozenset(flags), torch_word) == expected


def test_detect_reads_cuda_when_asked_and_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert detect("auto") == T4
    assert detect("gpu").native_bf16 is False
    assert detect("cpu").kind == "cpu"  # an explicit CPU run ignores the card


def test_detect_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert detect("auto") == AVX2


def _fit(config: str, args: list[str], root: Path) -> dict:
    from mnist_bench.cli import main

    main(["fit", "--config", str(ROOT / "configs" / f"{config}.yaml"), *args, "--trainer.max_epochs=1"])
    return json.loads(next(root.glob(f"lightning_logs/{config}/version_*/metrics.json")).read_text())


@pytest.mark.parametrize("probe", ["AVX2", "AVX512_BF16"])
def test_a_run_records_the_resolved_precision_and_hardware(
    probe, tiny_fit_args, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_capability", lambda: probe)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        m = _fit("cnn", tiny_fit_args, tmp_path)
    expected = "bf16-mixed" if probe == "AVX512_BF16" else "32-true"
    assert m["precision"] == expected and m["hardware"] == probe
    assert f"mnist-bench: precision {expected}" in caplog.text
    assert m["config"]["trainer"]["precision"] is None  # the config left it to the hardware


def test_a_run_keeps_the_configured_precision(tiny_fit_args, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX512_BF16")
    m = _fit("vit", [*tiny_fit_args, "--trainer.precision=bf16-mixed"], tmp_path)
    assert m["precision"] == "bf16-mixed"
