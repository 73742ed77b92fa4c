"""One trained run evaluated beyond accuracy: its test images corrupted, attacked, its confidence calibrated
and its cost measured. The results go into the run dir (``evaluation.json``, and ``evaluation.npz`` with each
image's right or wrong for the paired tests); a later evaluation with the same settings, checkpoint and code
reuses them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mnist_bench.errors import UserFacingError
from mnist_bench.evaluate.attacks import AttackSettings, attacked_correct, predict_pixels, scores_of_pixels
from mnist_bench.evaluate.calibration import calibrate
from mnist_bench.evaluate.corruptions import CORRUPTIONS, corrupt
from mnist_bench.evaluate.cost import CostSettings, measure_cost
from mnist_bench.provenance import source_digest
from mnist_bench.utils import atomic_path, read_json, write_json_atomic

# the code whose change changes the figures (the report and the pictures are made anew from them every time)
MEASURING_CODE = (
    "evaluate/run.py",
    "evaluate/attacks.py",
    "evaluate/calibration.py",
    "evaluate/corruptions.py",
    "evaluate/cost.py",
    "models/**/*.py",
    "inference/checkpoints.py",
    "inference/export.py",
)
EVALUATION_FILE = "evaluation.json"
CORRECT_FILE = "evaluation.npz"
PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class Settings:
    """What an evaluation does; any change evaluates every run again."""

    corruption_images: int = 2000  # test images per corruption, the same subset for every model
    attack_images: int = 500  # test images attacked, a subset of those
    seed: int = 0  # the subsets' draw and the corruptions' randomness
    attacks: AttackSettings = field(default_factory=AttackSettings)
    cost: CostSettings = field(default_factory=CostSettings)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EvaluationError(UserFacingError):
    """A run that cannot be evaluated; the message names it and why."""


def subset(n_test: int, size: int, seed: int) -> np.ndarray:
    """The test images evaluated: ``size`` positions drawn without replacement by ``seed``, in test-set
    order."""
    return np.sort(np.random.default_rng(seed).permutation(n_test)[: min(size, n_test)])


class TestImages:
    """The test split as [0, 1] pixels, and its corrupted copies made once per process for every model."""

    def __init__(self, data_dir: str, dataset: str, settings: Settings):
        from mnist_bench.data.datamodule import MNISTDataModule

        test = MNISTDataModule(data_dir, dataset=dataset).load(train=False)
        self.pixels = (test.images.float() / 255.0).numpy()
        self.labels = test.labels.numpy()
        self.index = subset(len(self.labels), settings.corruption_images, settings.seed)
        self.attack_index = self.index[: settings.attack_images]
        self.seed = settings.seed
        self._corrupted: dict[str, np.ndarray] = {}

    def corrupted(self, name: str) -> np.ndarray:
        """The subset's images under one corruption, N×1×H×W."""
        if name not in self._corrupted:
            self._corrupted[name] = corrupt(self.pixels[self.index, 0], name, self.seed, self.index)[:, None]
        return self._corrupted[name]


def evaluation_key(run_dir: Path, ckpt: Path, settings: Settings) -> str:
    """What a stored evaluation must match to be reused: the settings, the checkpoint (size and time) and the
    evaluation code."""
    stat = ckpt.stat()
    text = json.dumps(
        {
            "settings": settings.as_dict(),
            "ckpt": [stat.st_size, stat.st_mtime_ns],
            "code": source_digest(PACKAGE, MEASURING_CODE),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_facts(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics_path, config_path = run_dir / "metrics.json", run_dir / "config.yaml"
    if not metrics_path.is_file() or not config_path.is_file():
        raise EvaluationError(
            f"{run_dir}: not a finished run (no metrics.json or config.yaml). Fix: pass the run "
            "dirs of finished runs, or run make benchmark first"
        )
    try:
        metrics = read_json(metrics_path)
        config = yaml.safe_load(config_path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise EvaluationError(f"{run_dir}: its metrics.json or config.yaml does not read ({err})") from None
    if not isinstance(metrics, dict) or metrics.get("status") != "ok":
        raise EvaluationError(
            f"{run_dir}: the run did not finish ok (status "
            f"{metrics.get('status') if isinstance(metrics, dict) else None!r})"
        )
    data = ((config or {}).get("data") or {}).get("init_args") or {}
    return metrics, data


def _validation_scores(model, data_dir: str, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The model's class scores on its own run's validation split (its val_size and split_seed), float16 like
    test_predictions.npz."""
    from mnist_bench.data.datamodule import MNISTDataModule

    dm = MNISTDataModule(
        data_dir,
        val_size=int(data.get("val_size", 5000)),
        split_seed=int(data.get("split_seed", 0)),
        dataset=str(data.get("dataset", "mnist")),
    )
    dm.setup("fit")
    pixels = (dm.val_set.images.float() / 255.0).numpy()
    return scores_of_pixels(model, pixels).astype(np.float16), dm.val_set.labels.numpy()


def evaluate_run(
    run_dir: str | Path,
    data_dir: str,
    settings: Settings,
    images: Callable[[str], TestImages],
    log: Callable[[str], None] = print,
    force: bool = False,
) -> dict[str, Any]:
    """The run's evaluation, from its run dir when one with the same key is there, else measured now."""
    from mnist_bench.callbacks.predictions import PREDICTIONS_FILE, read_predictions
    from mnist_bench.inference.checkpoints import load_trained, resolve_checkpoint

    run_dir = Path(run_dir)
    metrics, data = _run_facts(run_dir)
    ckpt = resolve_checkpoint(run_dir).resolve()
    key = evaluation_key(run_dir, ckpt, settings)
    stored = run_dir / EVALUATION_FILE
    if not force and stored.is_file() and (run_dir / CORRECT_FILE).is_file():
        try:
            record = read_json(stored)
            if isinstance(record, dict) and record.get("key") == key:
                log(f"  {metrics.get('model')}: reused {stored}")
                return {**record, "reused": True}
        except (OSError, ValueError):
            pass
    model_name = str(metrics.get("model"))
    log(f"  {model_name}: evaluating {run_dir}")
    started = time.perf_counter()
    model = load_trained(ckpt).cpu().eval()
    test = images(str(data.get("dataset", "mnist")))
    correct: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    correct["clean"] = predict_pixels(model, test.pixels[test.index]) == test.labels[test.index]
    for name in CORRUPTIONS:
        correct[f"corruption/{name}"] = predict_pixels(model, test.corrupted(name)) == test.labels[test.index]
    timing["corruptions_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    attack_pixels, attack_labels = test.pixels[test.attack_index], test.labels[test.attack_index]
    for name, right in attacked_correct(model, attack_pixels, attack_labels, settings.attacks).items():
        correct[f"attack/{name}"] = right
    timing["attacks_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    predictions = read_predictions(run_dir / PREDICTIONS_FILE)
    if predictions.get("scores") is None:
        raise EvaluationError(f"{run_dir / PREDICTIONS_FILE}: no class scores in it, so no calibration")
    val_scores, val_target = _validation_scores(model, data_dir, data)
    calibration = calibrate(
        val_scores, val_target, np.asarray(predictions["scores"]), np.asarray(predictions["target"])
    )
    timing["calibration_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cost = measure_cost(model, ckpt, settings.cost)
    timing["cost_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - started

    accuracy = {name: float(right.mean()) for name, right in correct.items()}
    accuracy["corruption/mean"] = float(np.mean([accuracy[f"corruption/{name}"] for name in CORRUPTIONS]))
    record = {
        "key": key,
        "run_dir": str(run_dir),
        "model": model_name,
        "seed": metrics.get("seed"),
        "dataset": metrics.get("dataset"),
        "test_acc": metrics.get("test/acc"),
        "git_sha": metrics.get("git_sha"),
        "trained_on": metrics.get("hardware"),
        "settings": settings.as_dict(),
        "n_corruption": int(len(test.index)),
        "n_attack": int(len(test.attack_index)),
        "accuracy": accuracy,
        "correct": {name: int(right.sum()) for name, right in correct.items()},
        "calibration": {k: v for k, v in asdict(calibration).items() if not isinstance(v, np.ndarray)},
        "cost": cost,
        "timing": timing,
    }
    arrays = {
        **{name: right for name, right in correct.items()},
        "calibration/confidence_before": calibration.confidence_before.astype(np.float32),
        "calibration/confidence_after": calibration.confidence_after.astype(np.float32),
        "calibration/right": calibration.right.astype(bool),
    }
    with atomic_path(run_dir / CORRECT_FILE) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            index=test.index,
            attack_index=test.attack_index,
            **{name.replace("/", "__"): values for name, values in arrays.items()},
        )
    write_json_atomic(stored, record)
    log(
        f"  {model_name}: done in {timing['total_s']:.0f} s (corruptions {timing['corruptions_s']:.0f} s,"
        f" attacks {timing['attacks_s']:.0f} s, calibration {timing['calibration_s']:.0f} s, cost"
        f" {timing['cost_s']:.0f} s)"
    )
    return record


def load_arrays(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Each image's right or wrong per condition, and its calibration arrays, from the run's
    ``evaluation.npz``."""
    with np.load(Path(run_dir) / CORRECT_FILE) as f:
        return {name.replace("__", "/"): f[name] for name in f.files}
