"""Run each model's recipe in its own process and collect its ``metrics.json``."""

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

from mnist_bench.benchmark.jobs.recipes import Recipe
from mnist_bench.benchmark.report.row import failed_row
from mnist_bench.cli.rundirs import RUN_DIR_LINE
from mnist_bench.utils import process_alive, read_json

INTERRUPT_GRACE_S = 20.0  # an interrupted run gets this long to stop on SIGINT before it is killed
RUNNING: set[int] = set()  # the process groups of the runs going on now (each run has its own session)
STOPPING = threading.Event()  # set on Ctrl-C: no run starts after it


def stop_all_runs() -> None:
    """Ctrl-C for every run going on: SIGINT to each run's process group (Lightning stops at the next step),
    then SIGKILL to what is left after INTERRUPT_GRACE_S. No run starts after this."""
    STOPPING.set()
    groups = list(RUNNING)
    for group in groups:
        _signal_group(group, signal.SIGINT)
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    while any(process_alive(g, group=True) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    for group in groups:
        _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_logged(
    cmd: list[str],
    log_file: Path,
    timeout_s: float | None = None,
    echo: Callable[[str], bool] = lambda line: False,
    keep: Callable[[str], bool] = lambda line: False,
    env: dict[str, str] | None = None,
    label: str = "",
    on_keep: Callable[[str], None] = lambda line: None,
) -> tuple[int | None, list[str], list[str]]:
    """Runs ``cmd`` with its output in ``log_file``; returns (exit code, last lines, every line for which
    ``keep`` is true), exit code None when it ran longer than ``timeout_s`` and was killed with all its
    processes (a silent child, DDP ranks too). Lines for which ``echo`` is true are printed (after ``label``,
    when several runs share the terminal); ``on_keep`` hears each kept line as it comes. ``env`` is added to
    this process's environment."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    lines: deque[str] = deque(maxlen=200)
    kept: list[str] = []
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with (
        open(log_file, "w") as log,
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        ) as proc,
    ):
        RUNNING.add(proc.pid)
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
                    on_keep(line.rstrip())
                if echo(line):
                    print(
                        f"  {label}{line.rstrip()}   [{time.perf_counter() - start:.0f} s since start]",
                        flush=True,
                    )
            code = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reaches only this process: the run is in a session of its own
            stop_all_runs()
            raise
        finally:
            RUNNING.discard(proc.pid)
            if timer is not None:
                timer.cancel()
    timed_out = killed.is_set() and code != 0  # a run that ended as the timer fired counts as ended
    return (None if timed_out else code), list(lines), kept


def run_one(
    recipe: Recipe,
    seed: int,
    data_dir: str,
    root: Path,
    extra: list[str],
    log_file: Path,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    label: str = "",
    on_run_dir: Callable[[Path], None] = lambda run_dir: None,
) -> dict[str, Any]:
    """``mnist-bench fit`` of one recipe in a subprocess; its output goes to the terminal and to ``log_file``.

    The row is the ``metrics.json`` of the run dir the run names; a crash, an out-of-memory kill or a timeout
    gives a failed row with the reason, never a missing one. ``env`` pins the run (its GPU or CPU cores);
    ``on_run_dir`` hears the run dir as soon as the run names it.
    """
    log_root = root / "lightning_logs"
    before = set(log_root.glob("*/version_*"))
    cmd = [
        sys.executable,
        "-m",
        "mnist_bench",
        "fit",
        *recipe.config_args(),
        f"--seed_everything={seed}",
        f"--data.data_dir={data_dir}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    code, lines, named_lines = run_logged(
        cmd,
        log_file,
        timeout_s,
        echo=lambda line: line.startswith("[") or line.startswith("mnist-bench:"),
        keep=lambda line: line.startswith(RUN_DIR_LINE),
        env=env,
        label=label,
        on_keep=lambda line: on_run_dir(Path(line[len(RUN_DIR_LINE) :].strip())),
    )
    named = [Path(line[len(RUN_DIR_LINE) :].strip()) for line in named_lines]
    new = sorted(set(log_root.glob("*/version_*")) - before, key=lambda p: p.stat().st_mtime)
    run_dir = named[-1] if named else (new[-1] if new else None)
    metrics_path = run_dir / "metrics.json" if run_dir is not None else None
    if code is None:
        return failed_row(recipe.model, seed, f"timed out after {timeout_s:.0f} s (log: {log_file})")
    if metrics_path is not None and metrics_path.is_file():
        row = read_json(metrics_path)
        if code != 0 and row.get("status") == "ok":
            row = {
                **row,
                "status": "failed",
                "error": f"exit code {code} after the test pass (log: {log_file})",
            }
        return row
    tail = lines[-30:]
    reason = next(
        (line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "no output"
    )
    return failed_row(recipe.model, seed, f"exit code {code}: {reason} (log: {log_file})")


RUN_DIR_WAIT_S = (
    120.0  # a parallel job starts when the one before it has made its run dir, or after this long
)


def run_all(
    runs: list,
    train: Callable[..., dict[str, Any]],
    environments: list[dict[str, str]],
    done: Callable[[Any, dict[str, Any]], None] = lambda run, row: None,
) -> dict[Any, dict[str, Any]]:
    """Trains ``runs`` with ``train(run, env=..., label=..., on_run_dir=...)``, as many at once as there are
    ``environments`` (each run gets a free one). Runs start one at a time, each when the one before it has
    made its run dir, so that two runs of a model never pick the same ``version_<n>``. ``done`` hears each row
    as it comes; returns the rows by run, whatever order they finished in."""
    import queue
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if len(environments) == 1:
        rows = {}
        for run in runs:
            rows[run] = train(run, env=environments[0], label="", on_run_dir=lambda run_dir: None)
            done(run, rows[run])
        return rows
    STOPPING.clear()
    free: queue.Queue[dict[str, str]] = queue.Queue()
    for env in environments:
        free.put(env)
    start_gate = threading.Lock()

    def one(run: Any) -> dict[str, Any] | None:
        env = free.get()
        start_gate.acquire()
        if STOPPING.is_set():  # interrupted while waiting: this run never starts
            start_gate.release()
            free.put(env)
            return None
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):  # the first caller (the poll or the run's end) opens the gate
                start_gate.release()

        def wait_for(run_dir: Path) -> None:  # off the output loop, which must keep reading
            def poll() -> None:
                deadline = time.monotonic() + RUN_DIR_WAIT_S
                while not run_dir.is_dir() and time.monotonic() < deadline and not once.locked():
                    time.sleep(0.2)
                release()

            threading.Thread(target=poll, daemon=True).start()

        try:
            label = f"[{getattr(run, 'name', run)}] "
            row = train(run, env=env, label=label, on_run_dir=wait_for)
        finally:
            release()
            free.put(env)
        if not STOPPING.is_set():  # a run cut short by Ctrl-C is not recorded as done
            done(run, row)
        return row

    pool = ThreadPoolExecutor(max_workers=len(environments))
    futures = {run: pool.submit(one, run) for run in runs}
    try:
        while not all(future.done() for future in futures.values()):  # awake, so that Ctrl-C is heard at once
            wait(list(futures.values()), timeout=0.5, return_when=FIRST_EXCEPTION)
        rows = {run: future.result() for run, future in futures.items()}
    except KeyboardInterrupt:  # in this thread; the runs are stopped and nothing waiting starts
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all_runs()
        raise
    pool.shutdown()
    return rows
