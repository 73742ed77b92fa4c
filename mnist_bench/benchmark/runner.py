"""Run each model's config in its own process and collect its ``metrics.json``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_bench.callbacks.report import TEST_KEYS
from mnist_bench.utils import read_json


def available_models(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def failed_row(model: str, seed: int, error: str) -> dict[str, Any]:
    return {"model": model, "seed": seed, "status": "failed", "error": error, **{k: None for k in TEST_KEYS}}


RUN_DIR_LINE = "mnist-bench: run dir "  # the CLI names its run dir in this line, before training


def run_logged(cmd: list[str], log_file: Path, timeout_s: float | None = None,
               echo: Callable[[str], bool] = lambda line: False,
               keep: Callable[[str], bool] = lambda line: False) -> tuple[int | None, list[str], list[str]]:
    """Runs ``cmd`` with its output in ``log_file``; returns (exit code, last lines, every line for which ``keep``
    is true), exit code None when it ran longer than ``timeout_s`` and was killed with all its processes (a silent
    child, DDP ranks too). Lines for which ``echo`` is true are printed."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    lines: deque[str] = deque(maxlen=200)
    kept: list[str] = []
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env, start_new_session=True) as proc:
        log.write(" ".join(cmd) + "\n")
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the run's own session: ranks it started go too
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill) if timeout_s else None
        if timer is not None:
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line.rstrip())
                if keep(line):
                    kept.append(line.rstrip())
                if echo(line):
                    print(f"  {line.rstrip()}   [{time.perf_counter() - start:.0f} s since start]", flush=True)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
    timed_out = killed.is_set() and code != 0  # a run that ended as the timer fired counts as ended
    return (None if timed_out else code), list(lines), kept


def run_one(model: str, seed: int, config_dir: Path, data_dir: str, root: Path, extra: list[str],
            log_file: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """``mnist-bench fit`` of one config in a subprocess; its output goes to the terminal and to ``log_file``.

    The row is the ``metrics.json`` of the run dir the run names; a crash, an out-of-memory kill or a timeout gives a
    failed row with the reason, never a missing one.
    """
    log_root = root / "lightning_logs"
    before = set(log_root.glob("*/version_*"))
    cmd = [
        sys.executable, "-m", "mnist_bench", "fit", "--config", str(config_dir / f"{model}.yaml"),
        f"--seed_everything={seed}", f"--data.data_dir={data_dir}", f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false", *extra,
    ]
    code, lines, named_lines = run_logged(cmd, log_file, timeout_s,
                                          echo=lambda line: line.startswith("[") or line.startswith("mnist-bench:"),
                                          keep=lambda line: line.startswith(RUN_DIR_LINE))
    named = [Path(line[len(RUN_DIR_LINE):].strip()) for line in named_lines]
    new = sorted(set(log_root.glob("*/version_*")) - before, key=lambda p: p.stat().st_mtime)
    run_dir = named[-1] if named else (new[-1] if new else None)
    metrics_path = run_dir / "metrics.json" if run_dir is not None else None
    if code is None:
        return failed_row(model, seed, f"timed out after {timeout_s:.0f} s (log: {log_file})")
    if metrics_path is not None and metrics_path.is_file():
        row = read_json(metrics_path)
        if code != 0 and row.get("status") == "ok":
            row = {**row, "status": "failed", "error": f"exit code {code} after the test pass (log: {log_file})"}
        return row
    tail = lines[-30:]
    reason = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "no output")
    return failed_row(model, seed, f"exit code {code}: {reason} (log: {log_file})")
