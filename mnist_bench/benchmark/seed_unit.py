"""The seed unit (su) once per machine: the seed notebook's 5-epoch CNN training time, measured when it is
missing and cached for the later benchmarks on the same machine.

The cache is ``seed_unit.json`` in ``$MNIST_BENCH_CACHE_DIR``, by default ``$XDG_CACHE_HOME/mnist-bench``
(else ``~/.cache/mnist-bench``). It keeps every measurement (date and seconds) under the machine it was made
on: the CPU's model name, torch's CPU capability, bf16 support, the usable cores, the torch version, and the
GPU when the runs use one. A benchmark uses the latest measurement of its machine and states the spread of all
of them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnist_bench.errors import first_line
from mnist_bench.utils import read_json, write_json_atomic

CACHE_VARIABLE = "MNIST_BENCH_CACHE_DIR"
CACHE_FILE = "seed_unit.json"
MODES = ("auto", "measure", "before_after", "skip")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def cache_path() -> Path:
    given = os.environ.get(CACHE_VARIABLE)
    if given:
        return Path(given) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnist-bench" / CACHE_FILE


def runs_device(extra: list[str]) -> torch.device:
    """The device the benchmark's runs train on: the GPU when there is one, unless the extra arguments say
    cpu."""
    on_cpu = any(arg.replace(" ", "=") == "--trainer.accelerator=cpu" for arg in extra)
    return torch.device("cuda" if torch.cuda.is_available() and not on_cpu else "cpu")


def _bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine(device: torch.device) -> dict[str, Any]:
    """What a seed unit is valid for."""
    from mnist_bench.precision import cpu_capability
    from mnist_bench.provenance import cpu_name

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    here: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_capability": cpu_capability(),
        "bf16": _bf16_supported(),
        "cores": cores,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        here["gpu"] = torch.cuda.get_device_name(device)
    return here


def _read_cache(path: Path) -> list[dict[str, Any]]:
    """The cache's machines, each with its measurements; a damaged cache is moved aside (``.damaged``) and
    counts as empty."""
    if not path.is_file():
        return []
    try:
        machines = read_json(path).get("machines")
        if not isinstance(machines, list) or not all(
            isinstance(m.get("machine"), dict)
            and all(isinstance(x.get("seconds"), (int, float)) for x in m.get("measurements"))
            for m in machines
        ):
            raise ValueError("not a seed unit cache")
        return machines
    except (OSError, ValueError, AttributeError, TypeError) as err:
        aside = path.with_name(path.name + ".damaged")
        print(f"   seed unit cache {path} is damaged ({first_line(err)}): moved to {aside}", flush=True)
        try:
            os.replace(path, aside)
        except OSError:
            pass
        return []


def cached(here: dict[str, Any]) -> list[dict[str, Any]]:
    """This machine's measurements, oldest first (each ``{"date", "seconds"}``)."""
    for entry in _read_cache(cache_path()):
        if entry["machine"] == here:
            return list(entry["measurements"])
    return []


def was_measured(seconds: Any) -> bool:
    """Whether ``seconds`` is a seed unit this machine's cache holds (a record's unit can be trusted only
    so)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return False
    return any(
        abs(x["seconds"] - seconds) < 1e-3 for m in _read_cache(cache_path()) for x in m["measurements"]
    )


def remember(here: dict[str, Any], seconds: float, date: str) -> list[dict[str, Any]]:
    """Adds a measurement of this machine to the cache; returns this machine's measurements."""
    path = cache_path()
    machines = _read_cache(path)
    entry = next((m for m in machines if m["machine"] == here), None)
    if entry is None:
        entry = {"machine": here, "measurements": []}
        machines.append(entry)
    entry["measurements"].append({"date": date, "seconds": round(seconds, 3)})
    try:
        write_json_atomic(path, {"machines": machines})
    except OSError as err:
        print(f"   seed unit not cached ({path}: {first_line(err)})", flush=True)
    return list(entry["measurements"])


@dataclass
class SeedUnit:
    """The seed unit a benchmark's su are in: its seconds, when it was measured, how this benchmark got it,
    and the cached measurements of this machine (its spread)."""

    seconds: float
    date: str
    how: str  # "cached", "measured" (by this benchmark) or "before_after" (before and after its runs)
    machine: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)  # this machine's measurements in the cache
    before_after: tuple[float, float] | None = None

    def spread(self) -> dict[str, Any]:
        values = [m["seconds"] for m in self.history] or [self.seconds]
        return {"min": round(min(values), 3), "max": round(max(values), 3), "n": len(values)}

    def note(self) -> str:
        """How the header states the unit: when and how it was measured and its spread."""
        s = self.spread()
        cache = (
            f"{s['n']} measurement{'s' if s['n'] > 1 else ''} of this machine in the cache, "
            f"{s['min']:.1f}–{s['max']:.1f} s"
        )
        if self.before_after:
            before, after = self.before_after
            return (
                f"measured before and after the runs ({before:.1f} and {after:.1f} s; the unit is their mean,"
                f" the runs ended {self.date}; {cache})"
            )
        return (
            f"measured {self.date} ({'for this benchmark' if self.how == 'measured' else 'cached'}; {cache})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "measured": self.date,
            "how": self.how,
            "before_after": list(self.before_after) if self.before_after else None,
            "spread": self.spread(),
            "machine": self.machine,
            "cache": str(cache_path()),
        }


def measure(data_dir: str, device: torch.device) -> float | None:
    """The seed notebook's pipeline timed here: 1 su. None (with the reason) when it cannot run; the models'
    runs then say what is wrong with the data."""
    from mnist_bench.benchmark import seed_pipeline

    print(
        f"== seed unit: the seed notebook's pipeline, {seed_pipeline.SEED_EPOCHS} epochs on {device} ==",
        flush=True,
    )
    try:
        return seed_pipeline.time_seed_pipeline(data_dir, seed_pipeline.SEED_EPOCHS, device)
    except (RuntimeError, OSError) as err:
        print(f"   -> no seed unit: {first_line(err)}", flush=True)
        return None


def _measured(here: dict[str, Any], data_dir: str, device: torch.device, how: str) -> SeedUnit | None:
    seconds = measure(data_dir, device)
    if seconds is None:
        return None
    date = time.strftime(DATE_FORMAT)
    return SeedUnit(seconds, date, how, here, remember(here, seconds, date))


def choose(mode: str, data_dir: str, extra: list[str], cut_short: str | None) -> SeedUnit | None:
    """The seed unit for a benchmark. ``auto``: this machine's latest cached one, else measured now, unless
    the runs are cut short (``cut_short`` says how), which never measure it; ``measure`` and ``before_after``
    measure it now (asked for); ``cached``: the cached one or none; ``skip``: none."""
    if mode == "skip":
        return None
    device = runs_device(extra)
    here = machine(device)
    history = cached(here)
    if mode in ("auto", "cached") and history:
        latest = history[-1]
        return SeedUnit(float(latest["seconds"]), str(latest["date"]), "cached", here, history)
    if mode == "cached":
        return None
    if mode == "auto" and cut_short:
        print(
            f"== seed unit: none cached for this machine, and the runs are cut short ({cut_short}): not"
            " measured, times in seconds only (--seed_unit measure measures it) ==",
            flush=True,
        )
        return None
    return _measured(here, data_dir, device, "before_after" if mode == "before_after" else "measured")


def after_runs(unit: SeedUnit, data_dir: str, extra: list[str]) -> SeedUnit:
    """``before_after``: the unit timed again after the runs; the unit becomes the mean of the two."""
    again = _measured(unit.machine, data_dir, runs_device(extra), "before_after")
    if again is None:
        return unit
    return SeedUnit(
        (unit.seconds + again.seconds) / 2,
        again.date,
        "before_after",
        unit.machine,
        again.history,
        (round(unit.seconds, 3), round(again.seconds, 3)),
    )


def expected_seconds(mode: str, extra: list[str], cut_short: str | None) -> tuple[float | None, int]:
    """How long the seed unit's measuring will take in this benchmark (the latest cached value per
    measurement, None when this machine has none) and how many measurements it makes."""
    if mode == "skip":
        return None, 0
    history = cached(machine(runs_device(extra)))
    times = {"measure": 1, "before_after": 2}.get(mode, 0 if history or cut_short else 1)
    return (float(history[-1]["seconds"]) if history else None), times
