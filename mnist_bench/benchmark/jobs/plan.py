"""The benchmark's runs as a list: what to run, what is already done, and where each run may run.

The list (model × seed, in order) is the same for a sequential run, ``--jobs N`` and a SLURM job array, so
that any of them gives the same table. A finished run is recorded in
``<results>/runs/<model>-seed<seed>.json`` with a key made of everything that decides its result (the config
files, the extra arguments, the seed, the data folder and the code); rerunning the benchmark with the same key
reuses the run instead of training it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_bench.benchmark.jobs.recipes import Recipe
from mnist_bench.callbacks.predictions import PREDICTIONS_FILE
from mnist_bench.config_files import files_digest, included_files, named_files
from mnist_bench.provenance import source_digest
from mnist_bench.utils import CPUS_VARIABLE, read_json, write_json_atomic

DEFAULT_SEED = 42
PACKAGE_ROOT = (
    Path(__file__).resolve().parents[3]
)  # the tree that holds mnist_bench/ (and configs/ in a clone)
# the code a run executes: the package and its dependencies, less the modules that only read finished runs (a
# new column or plot does not make the runs done before stale)
RUN_CODE = ("mnist_bench/**/*.py", "pyproject.toml")
READS_FINISHED_RUNS = tuple(
    f"mnist_bench/{name}.py"
    for name in (
        "benchmark/__init__",
        "benchmark/__main__",
        "benchmark/seed_unit",
        "benchmark/seed_pipeline",
        *(f"benchmark/jobs/{m}" for m in ("__init__", "estimate", "plan")),
        *(f"benchmark/report/{m}" for m in ("__init__", "aggregate", "comparison", "stats", "table")),
        *(f"benchmark/experiments/{m}" for m in ("__init__", "overhead", "compile_speed", "ab")),
        *(f"plots/{m}" for m in ("benchmark", "robustness")),
    )
)


@dataclass(frozen=True)
class Run:
    model: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-seed{self.seed}"


def run_list(models: list[str], seeds: int) -> list[Run]:
    """Every model with seeds 42, 43, ...: model by model, as the table lists them."""
    return [Run(model, DEFAULT_SEED + k) for model in models for k in range(seeds)]


def run_key(run: Run, recipe: Recipe, data_dir: str, extra: list[str]) -> str:
    """What decides a run's result, hashed: its config files, the extra arguments, the seed, the data folder
    and the code it executes (every source file of the package but the benchmark's reporting, so an
    uncommitted change counts too)."""
    parts = {
        "model": run.model,
        "seed": run.seed,
        "config": recipe.texts(),
        # files those configs name (a section given as a file) and files among the extra arguments (an
        # overlay given with ARGS="--config ..."), by content
        "config_includes": [files_digest(included_files(path)) for path in recipe.files],
        "extra_files": [files_digest(named_files(arg, Path.cwd())) for arg in extra],
        "extra": extra,
        "data_dir": str(Path(data_dir).resolve()),
        "code": source_digest(PACKAGE_ROOT, RUN_CODE, skip=READS_FINISHED_RUNS),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def ledger_path(results: Path, run: Run) -> Path:
    return results / "runs" / f"{run.name}.json"


def placement(environment: dict[str, Any], jobs: int) -> str:
    """Where the runs train: the hardware (CPU capability and cores, GPUs) and how many share it. A run done
    with other hardware or another number of jobs (fewer threads, another precision) is not reused."""
    gpus = ", ".join(environment.get("gpus") or []) or "no GPU"
    return (
        f"{environment.get('cpu_capability')} x{environment.get('cpu_cores')} cores; {gpus}; "
        f"{jobs} job{'s' if jobs > 1 else ''}"
    )


KEY_FILE = "benchmark_key.txt"  # in a run dir: the key of the benchmark run that made it


def record_done(
    results: Path, run: Run, key: str, where: str, row: dict[str, Any], seed_unit_s: float | None
) -> None:
    """Keeps a run's row (ok or failed) under its key and placement, and stamps the key into the run's folder,
    so that a record pointed at another run (another config, the same model and seed) is told from its own."""
    if row.get("status") == "ok" and row.get("run_dir") and Path(row["run_dir"]).is_dir():
        (Path(row["run_dir"]) / KEY_FILE).write_text(key + "\n")
    write_json_atomic(
        ledger_path(results, run), {"key": key, "placement": where, "seed_unit_s": seed_unit_s, "row": row}
    )


def read_record(results: Path, run: Run) -> dict[str, Any] | None:
    """A run's record, or None when there is none or it is damaged (not JSON, not a record)."""
    path = ledger_path(results, run)
    try:
        entry = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("key"), str)
        or not isinstance(entry.get("row"), dict)
    ):
        return None
    return entry


def done_before(results: Path, run: Run, key: str, where: str) -> dict[str, Any] | None:
    """The record of a run finished with this key and placement, when its run dir still holds an ok
    ``metrics.json`` and the per-image predictions; else None (the run is trained again). The record's row is
    rebuilt from that metrics.json (see ``checked_against_run``)."""
    entry = read_record(results, run)
    if entry is None or entry["key"] != key or entry.get("placement") != where:
        return None
    row = entry["row"]
    run_dir = Path(str(row.get("run_dir") or ""))
    try:
        metrics = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        return None
    if (
        not isinstance(metrics, dict)
        or row.get("status") != "ok"
        or metrics.get("status") != "ok"
        or not (run_dir / PREDICTIONS_FILE).is_file()
        or stamped_key(run_dir) is None
    ):
        return None
    return {**entry, "row": checked_against_run(ledger_path(results, run), run, key, row, metrics)}


def stamped_key(run_dir: Path) -> str | None:
    """The key stamped into a run dir by the benchmark run that made it; None for a run it did not make."""
    try:
        return (run_dir / KEY_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def checked_against_run(
    record: Path, run: Run, key: str, row: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    """A recorded row as its run's own ``metrics.json`` has it: the figures are the run's, and a record that
    names another model or seed, a run made for another key, or whose figures differ from the run's, is a
    failed row that says so."""
    from mnist_bench.benchmark.report.aggregate import checked, predictions_disagree
    from mnist_bench.benchmark.report.row import MEAN_OVER_SEEDS, failed_row
    from mnist_bench.benchmark.seed_unit import was_measured

    differ = [k for k in ("model", "seed") if metrics.get(k) != row.get(k)]
    if (stamp := stamped_key(Path(str(row.get("run_dir") or "")))) != key:
        differ.append(
            "the recipe (the run was not made for this config, seed, code and data)"
            if stamp
            else f"its origin (the run has no {KEY_FILE}: the benchmark did not make it)"
        )
    if metrics.get("seed") != run.seed:
        differ.append(f"seed (the run is seed {run.seed})")
    differ += [k for k in MEAN_OVER_SEEDS if k in metrics and k != "time/fit_su" and row.get(k) != metrics[k]]
    run_s, fit_s = row.get("time/run_s"), metrics.get("time/fit_s")
    if isinstance(run_s, (int, float)) and isinstance(fit_s, (int, float)) and run_s < fit_s:
        differ.append(f"time/run_s ({run_s} s, less than the run's fit alone)")
    if (edited := predictions_disagree(row.get("run_dir"), metrics.get("test/acc"))) is not None:
        differ.append(edited)
    if differ:
        return failed_row(
            run.model,
            run.seed,
            f"{record} disagrees with {row.get('run_dir')}/metrics.json on {', '.join(differ)}: "
            "rerun with --force to train it again",
        )
    # seed units are not in the run's metrics.json: the fit su come from its own fit time and a unit this
    # machine measured (else none), never from the record
    unit = row.get("seed_unit_s") if was_measured(row.get("seed_unit_s")) else None
    return checked(
        {
            **row,
            **metrics,
            "run_dir": row.get("run_dir"),
            "seed_unit_s": unit,
            "time/fit_su": round(fit_s / unit, 3) if unit and isinstance(fit_s, (int, float)) else None,
        }
    )


def job_environments(jobs: int, gpus: list[str], cpus: list[int]) -> list[dict[str, str]]:
    """The environment of each of ``jobs`` parallel slots: one job keeps the whole machine; else each its own
    GPU (``CUDA_VISIBLE_DEVICES``) when there are GPUs, round robin, else its own share of the CPU cores
    (``MNIST_BENCH_CPUS``, which the run pins itself to, and as many threads)."""
    if jobs < 1:
        raise ValueError("jobs must be >= 1")
    if jobs == 1:
        return [{}]  # one job keeps the whole machine (a DDP run over several GPUs too)
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]} for k in range(jobs)]
    shares = [cpus[k::jobs] for k in range(jobs)]
    if any(not share for share in shares):
        raise ValueError(f"{jobs} jobs but only {len(cpus)} CPU cores: at most one job per core")
    return [
        {CPUS_VARIABLE: ",".join(map(str, share)), "OMP_NUM_THREADS": str(len(share))} for share in shares
    ]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them for a child."""
    import torch

    if not torch.cuda.is_available():
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        return [g.strip() for g in given.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def usable_cpus() -> list[int]:
    return (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )
