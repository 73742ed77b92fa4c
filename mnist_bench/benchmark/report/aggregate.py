"""Turn per-run rows into the results table: one row per model, mean ± std over seeds."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from mnist_bench.benchmark.report.row import FRACTIONS, MEAN_OVER_SEEDS, SAME_FOR_EVERY_SEED, failed_row
from mnist_bench.benchmark.report.stats import seed_interval, wilson_interval
from mnist_bench.utils import read_json


def bad_figure(row: dict[str, Any]) -> str | None:
    """What is wrong with an ok row's figures (from a file someone may have edited), or None: each one a
    finite number or absent (None), fractions within [0, 1], and the test accuracy given."""
    for key in MEAN_OVER_SEEDS:
        value = row.get(key)
        if value is None and key != "test/acc":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{key} is {value!r}, not a number"
        if key in FRACTIONS and not 0 <= value <= 1:
            return f"{key} is {value!r}, outside [0, 1]"
    return None


def predictions_disagree(run_dir: str | Path | None, accuracy: Any) -> str | None:
    """Whether a row's test accuracy is not the one its run's per-image predictions give (an edited figure),
    and how; None when they agree or the run kept no predictions."""
    from mnist_bench.callbacks.predictions import PREDICTIONS_FILE, read_predictions

    path = Path(run_dir or "") / PREDICTIONS_FILE
    if not run_dir or not path.is_file() or not isinstance(accuracy, (int, float)):
        return None
    try:
        kept = read_predictions(path)
        right = (kept["pred"] == kept["target"]).mean() if len(kept["target"]) else None
    except (OSError, ValueError, KeyError):
        return f"{path} is damaged"
    if right is None or abs(float(right) - accuracy) > 0.5 / len(kept["target"]):
        return f"test/acc {accuracy!r}, but {path} gives {right!r}"
    return None


def checked(row: dict[str, Any]) -> dict[str, Any]:
    """An ok row whose figures are not numbers becomes a failed row that says which; other rows as they
    are."""
    problem = bad_figure(row) if row.get("status") == "ok" else None
    if problem is None:
        return row
    return {
        **failed_row(row.get("model"), row.get("seed"), f"a damaged row: {problem}"),
        "run_dir": row.get("run_dir"),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group rows by model (in first-seen order). A model with no ok run stays a failed row with its error."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in map(checked, rows):
        groups[row["model"]].append(row)
    table = []
    for model, runs in groups.items():
        ok = [r for r in runs if r.get("status") == "ok"]
        seeds = [r.get("seed") for r in runs]
        if not ok:
            table.append(
                {
                    "model": model,
                    "status": "failed",
                    "error": runs[-1].get("error"),
                    "seeds": seeds,
                    "n_ok": 0,
                    "n_runs": len(runs),
                }
            )
            continue
        summary: dict[str, Any] = {
            "model": model,
            "status": "ok" if len(ok) == len(runs) else "partial",
            "seeds": seeds,
            "n_ok": len(ok),
            "n_runs": len(runs),
        }
        for key in SAME_FOR_EVERY_SEED:
            summary[key] = ok[0].get(key)
        officials = [r.get("test/official") for r in ok]  # one run on an unofficial test set marks its model
        summary["test/official"] = False if False in officials else (True if all(officials) else None)
        for key in MEAN_OVER_SEEDS:
            values = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
            summary[key] = statistics.fmean(values) if values else None
            summary[f"{key}:std"] = statistics.stdev(values) if len(values) > 1 else None
        errors = [r.get("error") for r in runs if r.get("status") != "ok"]
        summary["error"] = errors[0] if errors else None
        summary["test/acc_ci"] = test_images_interval(summary)
        accs = [r["test/acc"] for r in ok if isinstance(r.get("test/acc"), (int, float))]
        summary["test/acc_seed_ci"] = seed_interval(accs, bounds=(0.0, 1.0))
        table.append(summary)
    return table


def test_images_interval(row: dict[str, Any]) -> tuple[float, float] | None:
    """The 95% interval of a row's test accuracy from the number of test images it was scored on (for a mean
    over seeds: the interval of one run with that accuracy)."""
    acc, n = row.get("test/acc"), row.get("test/images")
    if not isinstance(acc, (int, float)) or not isinstance(n, int) or n <= 0:
        return None
    return wilson_interval(round(acc * n), n)


def with_intervals(row: dict[str, Any]) -> dict[str, Any]:
    """A run's row with the interval of its test accuracy."""
    return {**row, "test/acc_ci": test_images_interval(row)}


def rows_from_run_dirs(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per run dir (``lightning_logs/<model>/version_<n>``), from its metrics.json; a run dir without
    one (killed before its test pass) is a failed row. ``run_dir`` is the folder as found here."""
    rows = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.json"
        model = Path(run_dir).parent.name
        try:
            row = read_json(path) if path.is_file() else None
        except (OSError, ValueError) as err:
            row = failed_row(model, None, f"unreadable {path}: {err}")
        if row is not None and not isinstance(row, dict):
            row = failed_row(model, None, f"{path} is not a metrics record")
        if row is None:
            row = failed_row(
                model, None, f"no metrics.json in {run_dir}: the run stopped before its test pass"
            )
        rows.append(checked({**row, "run_dir": str(run_dir)}))
    return rows
