"""Run each model's config in its own process and collect its ``metrics.json``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from mnist_bench.callbacks.report import TEST_KEYS
from mnist_bench.utils import read_json


def available_models(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def _versions(log_root: Path, model: str) -> set[Path]:
    return set((log_root / model).glob("version_*"))


def failed_row(model: str, seed: int, error: str) -> dict[str, Any]:
    return {"model": model, "seed": seed, "status": "failed", "error": error, **{k: None for k in TEST_KEYS}}


def run_one(model: str, seed: int, config_dir: Path, data_dir: str, root: Path, extra: list[str],
            log_file: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """``mnist-bench fit`` of one config in a subprocess; its output goes to the terminal and to ``log_file``.

    A crash, an out-of-memory kill or a timeout gives a failed row with the reason, never a missing one.
    """
    log_root = root / "lightning_logs"
    before = _versions(log_root, model)
    cmd = [
        sys.executable, "-m", "mnist_bench", "fit", "--config", str(config_dir / f"{model}.yaml"),
        f"--seed_everything={seed}", f"--data.data_dir={data_dir}", f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false", *extra,
    ]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=30)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env) as proc:
        log.write(" ".join(cmd) + "\n")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if line.startswith(f"[{model}]") or line.startswith("mnist-bench:"):
                print(f"  {line.rstrip()}   [{time.perf_counter() - start:.0f} s since start]", flush=True)
            if timeout_s and time.perf_counter() - start > timeout_s:
                proc.kill()
                return failed_row(model, seed, f"timed out after {timeout_s:.0f} s (log: {log_file})")
        code = proc.wait()
    new = sorted(_versions(log_root, model) - before, key=lambda p: int(p.name.split("_")[-1]))
    metrics_path = new[-1] / "metrics.json" if new else None
    if metrics_path is not None and metrics_path.is_file():
        row = read_json(metrics_path)
        if code != 0 and row.get("status") == "ok":
            row = {**row, "status": "failed", "error": f"exit code {code} after the test pass (log: {log_file})"}
        return row
    reason = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "no output")
    return failed_row(model, seed, f"exit code {code}: {reason} (log: {log_file})")
