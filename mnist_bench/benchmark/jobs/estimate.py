"""How long each run of a benchmark will take, said before the wait, and how much is left as it goes.

A run's time is modelled as: start-up (imports, data, figures) + the first epoch's warm-up + per epoch (its
training images × seconds per training image + its validation images × seconds per evaluated image + the rest
of the epoch: checkpoints, logging) + the test images × seconds per evaluated image. The rates come from a
finished run of the same model and recipe on this machine (``<results>/runs/*.json``), scaled to the epochs
and batches this benchmark asks for; where there is none, from a probe: the run's own ``mnist-bench fit`` cut
to 2 epochs of a few batches (the same process, precision, threads and pinning as the run, so the same speed;
the second epoch gives the steady rate, the first the warm-up).
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_bench.benchmark.jobs.recipes import Recipe
from mnist_bench.errors import first_line
from mnist_bench.utils import read_json

PROBE_BATCHES = 10  # training batches in each of the probe's 2 epochs
PROBE_EVAL_BATCHES = 2  # validation batches per epoch and test batches of the probe
MODES = ("auto", "records", "off")
# trainer keys that make a run shorter than its recipe
CUT_KEYS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "max_steps",
    "max_time",
    "fast_dev_run",
    "overfit_batches",
)


# --- what the runs are asked to do
# -----------------------------------------------------------------------------
def overrides(extra: list[str]) -> dict[str, Any]:
    """The extra arguments as dotted keys and their values (``--trainer.max_epochs=1`` or
    ``--trainer.max_epochs 1``, parsed as YAML); arguments that are not ``--a.b`` key-value pairs are left
    out."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            if "=" in arg:
                key, text = arg[2:].split("=", 1)
            elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                key, text = arg[2:], extra[i + 1]
                i += 1
            else:
                key, text = arg[2:], "true"
            try:
                out[key] = yaml.safe_load(text)
            except yaml.YAMLError:
                out[key] = text
        i += 1
    return out


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        if not re.fullmatch(r"[\w.]+", key):
            continue  # callbacks+=..., not a plain key
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[last] = value
    return tree


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def planned_config(recipe: Recipe, extra: list[str]) -> dict[str, Any]:
    """The recipe's config files merged in order, with the extra arguments' keys on top (not resolved: only
    what they say)."""
    merged: dict[str, Any] = {}
    for path in recipe.files:
        try:
            given = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            given = {}
        merged = _merged(merged, given if isinstance(given, dict) else {})
    return _merged(merged, _nested(overrides(extra)))


def _shortened(key: str, value: Any, recipe_epochs: Any) -> bool:
    if value is None or value is False:
        return False
    if key == "max_epochs":
        return isinstance(value, int) and isinstance(recipe_epochs, int) and 0 <= value < recipe_epochs
    if key == "max_steps":
        return isinstance(value, int) and value >= 0
    if key.startswith("limit_"):
        return not (isinstance(value, float) and value >= 1.0)
    if key == "overfit_batches":
        return value not in (0, 0.0)
    return True  # max_time, fast_dev_run


def cut_short(extra: list[str], recipes: list[Recipe]) -> str | None:
    """How the extra arguments cut the runs short of these recipes (``limit_*_batches``, ``max_steps``,
    ``max_time``, ``fast_dev_run``, ``overfit_batches``, ``data.train_subset``, fewer ``max_epochs`` than a
    recipe), or None."""
    given = overrides(extra)
    for key in CUT_KEYS:
        if _shortened(key, given.get(f"trainer.{key}"), None):
            return f"--trainer.{key}={given[f'trainer.{key}']}"
    if given.get("data.train_subset") is not None or given.get("data.init_args.train_subset") is not None:
        return "--data.train_subset"
    if "trainer.max_epochs" in given:
        for recipe in recipes:
            epochs = (planned_config(recipe, []).get("trainer") or {}).get("max_epochs")
            if _shortened("max_epochs", given["trainer.max_epochs"], epochs):
                return (
                    f"--trainer.max_epochs={given['trainer.max_epochs']} (the {recipe.model} recipe:"
                    f" {epochs})"
                )
    return None


@dataclass(frozen=True)
class Work:
    """What one run does: epochs, training images in all, validation images in all, test images."""

    epochs: int
    train_images: int
    val_images: int
    test_images: int
    max_time_s: float | None = None


def _limited(batches: int, limit: Any) -> int:
    if limit is None or isinstance(limit, bool):
        return batches
    if isinstance(limit, float):
        return int(batches * limit) if limit < 1.0 else batches
    return min(batches, int(limit))


def _seconds(max_time: Any) -> float | None:
    """Lightning's ``max_time``: "DD:HH:MM:SS" or a dict of days, hours, minutes, seconds."""
    if isinstance(max_time, str) and re.fullmatch(r"\d+:\d+:\d+:\d+", max_time):
        d, h, m, s = (int(p) for p in max_time.split(":"))
        return ((d * 24 + h) * 60 + m) * 60 + s
    if isinstance(max_time, dict):
        return sum(
            float(max_time.get(k, 0)) * f
            for k, f in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1))
        )
    return None


def planned_work(
    trainer: dict[str, Any], sizes: tuple[int, int, int], batch_size: int, eval_batch_size: int
) -> Work | None:
    """The work a run with these trainer settings does on a dataset of ``sizes`` (training, validation, test
    images); None when its epochs are unbounded."""
    train_n, val_n, test_n = sizes
    epochs = trainer.get("max_epochs")
    train_b, val_b, test_b = (
        math.ceil(n / b)
        for n, b in ((train_n, batch_size), (val_n, eval_batch_size), (test_n, eval_batch_size))
    )
    fast = trainer.get("fast_dev_run")
    if fast not in (None, False, 0):
        n = 1 if fast is True else int(fast)
        epochs, train_b, val_b, test_b = 1, min(train_b, n), min(val_b, n), min(test_b, n)
    else:
        train_b = _limited(train_b, trainer.get("overfit_batches") or trainer.get("limit_train_batches"))
        val_b = _limited(val_b, trainer.get("limit_val_batches"))
        test_b = _limited(test_b, trainer.get("limit_test_batches"))
    steps = trainer.get("max_steps")
    if isinstance(steps, int) and steps >= 0:
        by_steps = math.ceil(steps / train_b) if train_b else 0
        epochs = by_steps if not isinstance(epochs, int) or epochs < 0 else min(epochs, by_steps)
        train_total = min(steps, epochs * train_b) * batch_size
    elif not isinstance(epochs, int) or epochs < 0:
        return None
    else:
        train_total = epochs * train_b * batch_size
    return Work(
        epochs,
        min(train_total, epochs * train_n),
        epochs * min(val_b * eval_batch_size, val_n),
        min(test_b * eval_batch_size, test_n),
        _seconds(trainer.get("max_time")),
    )


# --- rates from a finished run
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """A run's speeds, from its ``metrics.json`` row (and its process's wall time, where known)."""

    train_s_per_image: float
    warmup_s: float
    eval_s_per_image: float
    epoch_other_s: float
    startup_s: float
    sizes: tuple[int, int, int] | None  # the whole training, validation and test sets
    batch_size: int
    eval_batch_size: int
    train_images: float  # trained in all
    steady: bool  # per-epoch times separated the warm-up from the steady rate


def _num(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _config_data(row: dict[str, Any]) -> dict[str, Any]:
    data = (row.get("config") or {}).get("data") or {}
    return data.get("init_args", data) if isinstance(data, dict) else {}


def rates_of(row: dict[str, Any]) -> Rates | None:
    """The speeds a finished run shows; None when its row lacks the times."""
    epochs, train_s, fit_s, test_s = (
        _num(row, k) for k in ("epochs", "time/train_s", "time/fit_s", "time/test_s")
    )
    img_s, test_images = _num(row, "throughput/train_img_s"), _num(row, "test/images")
    if not (epochs and train_s and fit_s and img_s and test_images) or test_s is None:
        return None
    train_images = img_s * train_s
    per_epoch = [float(s) for s in row.get("time/epoch_train_s") or [] if isinstance(s, (int, float))]
    if len(per_epoch) >= 2:
        steady_epoch = statistics.median(per_epoch[1:])
        warmup = max(0.0, per_epoch[0] - steady_epoch)
        per_image = steady_epoch / (train_images / len(per_epoch))
    else:
        warmup, per_image = 0.0, train_s / train_images
    eval_per_image = test_s / test_images
    val_images = _num(row, "val/images") or 0.0
    other = max(0.0, (fit_s - train_s - epochs * val_images * eval_per_image) / epochs)
    run_s = _num(row, "time/run_s")
    startup = max(0.0, run_s - fit_s - test_s) if run_s else 0.0
    data = _config_data(row)
    batch_size = int(row.get("batch_size") or data.get("batch_size") or 1)
    eval_batch_size = int(data.get("eval_batch_size") or batch_size)
    full = [_num(row, k) for k in ("train/full_images", "val/full_images", "test/full_images")]
    trainer = (row.get("config") or {}).get("trainer") or {}
    if full[0] is None and not any(trainer.get(k) not in (None, False, 0, 1.0, -1) for k in CUT_KEYS):
        full[0] = round(train_images / epochs)  # an earlier row: a whole run shows the training set's size
    if full[1] is None and trainer.get("limit_val_batches") in (None, 1.0):
        full[1] = val_images
    sizes = tuple(int(n) for n in full) if all(n is not None for n in full) else None
    return Rates(
        per_image,
        warmup,
        eval_per_image,
        other,
        startup,
        sizes,
        batch_size,
        eval_batch_size,
        train_images,
        len(per_epoch) >= 2,
    )


def predict(rates: Rates, work: Work) -> float:
    fit = (
        rates.warmup_s
        + work.train_images * rates.train_s_per_image
        + work.val_images * rates.eval_s_per_image
        + work.epochs * rates.epoch_other_s
    )
    if work.max_time_s is not None:
        fit = min(fit, work.max_time_s)
    return rates.startup_s + fit + work.test_images * rates.eval_s_per_image


def estimate_from(row: dict[str, Any], trainer: dict[str, Any]) -> float | None:
    """A run's expected seconds, with ``trainer`` settings, from the row of a finished run of its recipe: its
    rates scaled to the epochs and batches asked for."""
    rates = rates_of(row)
    if rates is None:
        return None
    if rates.sizes is None:  # the dataset's size is unknown: the finished run's own work, by epochs
        epochs = (
            trainer.get("max_epochs") if isinstance(trainer.get("max_epochs"), int) else _num(row, "epochs")
        )
        done = _num(row, "epochs") or 1
        return (
            rates.startup_s + (_num(row, "time/fit_s") or 0) * epochs / done + (_num(row, "time/test_s") or 0)
        )
    work = planned_work(trainer, rates.sizes, rates.batch_size, rates.eval_batch_size)
    return None if work is None else predict(rates, work)


# --- which finished runs count
# ------------------------------------------------------------------------------------
def _agrees(given: Any, resolved: Any) -> bool:
    """Whether a resolved config holds what the recipe gives (a class path by its last name too)."""
    if isinstance(given, dict):
        if not isinstance(resolved, dict):
            return False
        inner = resolved.get("init_args") if isinstance(resolved.get("init_args"), dict) else {}
        return all(
            _agrees(v, resolved[k]) if k in resolved else (k in inner and _agrees(v, inner[k]))
            for k, v in given.items()
            if k != "data_dir"
        )
    if isinstance(given, (list, tuple)):
        return (
            isinstance(resolved, (list, tuple))
            and len(given) == len(resolved)
            and all(_agrees(g, r) for g, r in zip(given, resolved, strict=True))
        )
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        return (
            isinstance(resolved, (int, float))
            and not isinstance(resolved, bool)
            and float(given) == float(resolved)
        )
    if isinstance(given, str) and isinstance(resolved, str):
        return given == resolved or resolved.endswith("." + given)
    return given == resolved


def same_recipe(row: dict[str, Any], planned: dict[str, Any]) -> bool:
    """A finished run trained what the planned run will: the same model and data settings, and the same
    precision where one is asked for."""
    config = row.get("config") or {}
    for section in ("model", "data"):
        if section in planned and not _agrees(planned[section], config.get(section)):
            return False
    precision = (planned.get("trainer") or {}).get("precision")
    return (
        precision is None
        or str(precision) == str(row.get("precision"))
        or str(row.get("precision")).startswith(f"{precision}-")
    )


@dataclass
class Estimate:
    seconds: float | None
    source: str  # what it comes from, in words


def _records(results: Path, model: str) -> list[tuple[float, dict[str, Any]]]:
    found = []
    for path in (results / "runs").glob(f"{model}-seed*.json"):
        try:
            entry = read_json(path)
            found.append((path.stat().st_mtime, path, entry))
        except (OSError, ValueError):
            continue
    return [
        (mtime, {**entry, "_path": str(path)})
        for mtime, path, entry in sorted(found, key=lambda f: -f[0])
        if isinstance(entry, dict) and isinstance(entry.get("row"), dict)
    ]


def from_records(
    results: Path, model: str, where: str, device: str, planned: dict[str, Any]
) -> tuple[dict[str, Any], str, bool] | None:
    """The newest finished ok run of this model and recipe on this machine (its placement and device), with
    the record it was read from and whether its rates hold for the planned run (per-epoch times that separate
    the warm-up, or at least half the training images the planned run trains); the newest of any when none
    holds."""
    trainer = planned.get("trainer") or {}
    weak = None
    for _, entry in _records(results, model):
        row = entry["row"]
        if (
            row.get("status") != "ok"
            or row.get("model") != model
            or entry.get("placement") != where
            or not str(row.get("device", "")).startswith(device)
            or not same_recipe(row, planned)
        ):
            continue
        rates = rates_of(row)
        if rates is None:
            continue
        work = (
            planned_work(trainer, rates.sizes, rates.batch_size, rates.eval_batch_size)
            if rates.sizes
            else None
        )
        if rates.steady or (work is not None and rates.train_images >= work.train_images / 2):
            return row, entry["_path"], True
        weak = weak or (row, entry["_path"], False)
    return weak


# --- the probe
# ----------------------------------------------------------------------------------------------------
def run_probe(
    recipe: Recipe, seed: int, data_dir: str, extra: list[str], env: dict[str, str], log_file: Path
) -> tuple[dict[str, Any] | None, str]:
    """The run's own ``mnist-bench fit`` cut to 2 epochs of PROBE_BATCHES batches, in a folder of its own that
    is removed after; returns its row (with its process's wall time) or None, and what happened."""
    from mnist_bench.benchmark.jobs.runner import run_logged

    with tempfile.TemporaryDirectory(prefix="mnist-bench-probe-") as root:
        cmd = [
            sys.executable,
            "-m",
            "mnist_bench",
            "fit",
            *recipe.config_args(),
            f"--seed_everything={seed}",
            f"--data.data_dir={data_dir}",
            "--trainer.enable_progress_bar=false",
            *extra,
            f"--trainer.default_root_dir={root}",
            "--trainer.max_epochs=2",
            f"--trainer.limit_train_batches={PROBE_BATCHES}",
            f"--trainer.limit_val_batches={PROBE_EVAL_BATCHES}",
            f"--trainer.limit_test_batches={PROBE_EVAL_BATCHES}",
            "--trainer.max_steps=-1",
            "--trainer.max_time=null",
        ]
        start = time.perf_counter()
        try:
            code, _, _ = run_logged(cmd, log_file, timeout_s=600, env=env)
        except OSError as err:
            return None, f"its probe did not start: {first_line(err)}"
        wall = time.perf_counter() - start
        found = sorted(Path(root).glob("lightning_logs/*/version_*/metrics.json"))
        try:
            row = read_json(found[-1]) if found and code == 0 else None
        except (OSError, ValueError):
            row = None
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None, f"its probe failed (log: {log_file})"
    return {**row, "time/run_s": wall}, f"a probe ({PROBE_BATCHES} batches x 2 epochs, {wall:.0f} s)"


def estimate_runs(
    runs: list,
    recipes: dict[str, Recipe],
    data_dir: str,
    extra: list[str],
    results: Path,
    where: str,
    device: str,
    env: dict[str, str],
    mode: str = "auto",
) -> dict[Any, Estimate]:
    """Each run's expected time and where it comes from. ``auto``: a finished run on this machine, else a
    probe (none when the run itself is about as short as a probe); ``records``: finished runs only; ``off``:
    none."""
    out: dict[Any, Estimate] = {}
    by_model: dict[str, Estimate] = {}
    for run in runs:
        if mode == "off":
            out[run] = Estimate(None, "not estimated (--estimate off)")
            continue
        if run.model not in by_model:
            by_model[run.model] = _estimate_model(
                run, recipes[run.model], data_dir, extra, results, where, device, env, mode
            )
        out[run] = by_model[run.model]
    return out


def _estimate_model(run, recipe, data_dir, extra, results, where, device, env, mode) -> Estimate:
    planned = planned_config(recipe, extra)
    trainer = planned.get("trainer") or {}
    found = from_records(results, run.model, where, device, planned)
    if found and found[2]:
        row, path, _ = found
        epochs = row.get("epochs")
        return Estimate(
            estimate_from(row, trainer),
            f"from the finished run in {path} ({epochs} epochs, "
            f"{row.get('time/run_s') or row.get('time/fit_s')} s)",
        )
    weak = found[:2] if found else None
    data = planned.get("data") or {}
    batch_size = int((data.get("init_args") or data).get("batch_size") or 128)
    tiny = planned_work(trainer, (10**9, 10**9, 10**9), batch_size, batch_size)
    if mode == "auto" and (tiny is None or tiny.train_images > 2 * PROBE_BATCHES * batch_size):
        print(f"== estimate: probing {run.model} ({PROBE_BATCHES} batches x 2 epochs) ==", flush=True)
        log = results / "logs" / f"{run.model}-probe.log"
        row, what = run_probe(recipe, run.seed, data_dir, extra, env, log)
        if row is not None:
            return Estimate(estimate_from(row, trainer), f"from {what}")
        if weak is None:
            return Estimate(None, f"no estimate: {what}")
    if weak is not None:
        row, path = weak
        return Estimate(
            estimate_from(row, trainer),
            f"from the short finished run in {path} (rough: its warm-up is in its rate)",
        )
    if mode == "auto":
        return Estimate(None, "no estimate: no finished run here, and the run is about as short as a probe")
    return Estimate(None, "no estimate: no finished run of this recipe on this machine")


# --- saying it
# ----------------------------------------------------------------------------------------------------
def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def schedule_s(seconds: list[float], jobs: int) -> float:
    """The wall time of runs taken in order by ``jobs`` slots, each the next free one."""
    slots = [0.0] * max(1, jobs)
    for s in seconds:
        slots[slots.index(min(slots))] += s
    return max(slots)


def plan_lines(
    estimates: dict[Any, Estimate], jobs: int, seed_unit_s: float | None, seed_unit_times: int
) -> list[str]:
    """The expected time of each run and of the whole benchmark, before the wait."""
    lines = ["== expected time, before the runs ==" + (f" ({jobs} at once)" if jobs > 1 else "")]
    for run, est in estimates.items():
        what = minutes(est.seconds) if est.seconds is not None else "?"
        lines.append(f"   {run.model} (seed {run.seed}): {what}  {est.source}")
    known = [e.seconds for e in estimates.values() if e.seconds is not None]
    total = schedule_s(known, jobs)
    unknown = len(estimates) - len(known)
    text = f"   all: {'at least ' if unknown else ''}{minutes(total)}"
    if unknown:
        text += f" ({unknown} run{'s' if unknown > 1 else ''} without an estimate)"
    if seed_unit_times:
        text += f", plus the seed unit measured {seed_unit_times}x" + (
            f" (about {minutes(seed_unit_s)} each)" if seed_unit_s else " (its first time on this machine)"
        )
    lines.append(text)
    return lines


class Countdown:
    """The remaining time of a benchmark as its runs start and end: each run's estimate, less what it has run;
    with several jobs the runs left share the slots."""

    def __init__(self, estimates: dict[Any, Estimate], jobs: int, after_s: float = 0.0):
        self.estimates = {run: est.seconds for run, est in estimates.items()}
        self.jobs = max(1, jobs)
        self.after_s = after_s  # work after the runs (the seed unit timed again)
        self.started: dict[Any, float] = {}
        self.finished: set = set()
        self.lock = threading.Lock()

    def start(self, run: Any, now: float | None = None) -> str:
        """Marks ``run`` started; returns ``this run ~X, the benchmark ~Y left``."""
        now = time.perf_counter() if now is None else now
        with self.lock:
            self.started[run] = now
            mine = self.estimates.get(run)
            left, unknown = self._left(now)
        this = f"this run ~{minutes(mine)}" if mine is not None else "this run: no estimate"
        return f"{this}, the benchmark {'at least ' if unknown else '~'}{minutes(left)} left"

    def finish(self, run: Any, now: float | None = None) -> str:
        """Marks ``run`` done; returns how long it took against its estimate."""
        now = time.perf_counter() if now is None else now
        with self.lock:
            self.finished.add(run)
            took = now - self.started.get(run, now)
        mine = self.estimates.get(run)
        return f"{minutes(took)}" + (f", estimated {minutes(mine)}" if mine is not None else "")

    def _left(self, now: float) -> tuple[float, bool]:
        pending = [run for run in self.estimates if run not in self.finished]
        known = [
            max(0.0, (self.estimates[r] or 0.0) - (now - self.started[r] if r in self.started else 0.0))
            for r in pending
            if self.estimates[r] is not None
        ]
        unknown = any(self.estimates[r] is None for r in pending)
        left = sum(known) / min(self.jobs, max(1, len(pending)))
        return left + self.after_s, unknown
