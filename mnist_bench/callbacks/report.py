"""The run's record: per-epoch history, ``metrics.json`` and the TensorBoard HPARAMS entry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, WeightAveraging
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import TensorBoardLogger

from mnist_bench import cpu_memory
from mnist_bench.benchmark.report.row import TEST_FIGURES
from mnist_bench.callbacks.history import run_history
from mnist_bench.callbacks.timing import TimingCallback
from mnist_bench.errors import first_line
from mnist_bench.provenance import device_description, git_sha, versions
from mnist_bench.utils import read_json, write_json_atomic


def _scalar(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def early_stopping(trainer: Trainer) -> dict[str, Any] | None:
    """What an EarlyStopping callback watched and whether it stopped the run (the epoch index, as in
    history)."""
    stopper = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
    if stopper is None:
        return None
    stopped = stopper.stopping_reason != EarlyStoppingReason.NOT_STOPPED
    return {
        "monitor": stopper.monitor,
        "mode": stopper.mode,
        "patience": stopper.patience,
        "stopped": stopped,
        "stopped_epoch": stopper.stopped_epoch if stopped else None,
        "reason": stopper.stopping_reason_message,
    }


class RunReport(Callback):
    """After test (or on a crash) writes ``metrics.json``; logs the final test metrics to TensorBoard's
    HPARAMS."""

    def __init__(self, run_dir: str | Path, info: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.info = info
        self.metrics: dict[str, Any] | None = None

    # the record
    # --------------------------------------------------------------------------------------------------
    def build(
        self, trainer: Trainer, pl_module: LightningModule, status: str, error: str | None
    ) -> dict[str, Any]:
        timing = next((cb for cb in trainer.callbacks if isinstance(cb, TimingCallback)), None)
        history = run_history(trainer)
        metrics = {
            "model": pl_module.model_name,
            "dataset": pl_module.dataset.name,
            "status": status,
            "error": error,
            **{key: _scalar(trainer.callback_metrics.get(key)) for key in TEST_FIGURES},
            "loss_kind": pl_module.loss_kind,
            "epochs": len(history),
            **(timing.summary() if timing else {}),
            "params": pl_module.num_parameters(),
            "pretrained": bool(pl_module.pretrained),
            "image_size": pl_module.image_size,
            "batch_size": self.info.get("batch_size"),
            "seed": self.info.get("seed"),
            "precision": str(trainer.precision),
            "compile": getattr(pl_module, "compiled", False),
            "tested_weights": self.info.get("tested_weights"),
            "weight_averaging": [
                type(cb).__name__ for cb in trainer.callbacks if isinstance(cb, WeightAveraging)
            ],
            "early_stopping": early_stopping(trainer),
            "hardware": self.info.get("hardware"),
            "cpu_memory": (
                cpu_memory.state()
            ),  # whether freed memory stays in the process (mnist_bench/cpu_memory.py)
            "device": device_description(pl_module.device),
            "versions": versions(),
            "git_sha": git_sha(),
            "run_dir": str(self.run_dir),
            "history": history,
            "config": self.info.get("config"),
        }
        metrics.update(pl_module.extra_metrics())
        # the whole sets the run drew from (an estimate scales a run's rates to other limits with them)
        for stage in ("train", "val", "test"):
            data = (
                getattr(trainer.datamodule, f"{stage}_set", None) if trainer.datamodule is not None else None
            )
            metrics[f"{stage}/full_images"] = len(data) if data is not None else None
        # a test set cut, padded or made at home scores something else than the dataset's published test set
        metrics["test/official"] = (
            getattr(trainer.datamodule, "official_test", None)
            if metrics["test/full_images"] is not None
            else None
        )
        return metrics

    def write(self, metrics: dict[str, Any]) -> Path:
        path = self.run_dir / "metrics.json"
        write_json_atomic(path, metrics)
        return path

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.metrics = self.build(trainer, pl_module, "ok", None)
        self.write(self.metrics)
        self._log_hparams(trainer, self.metrics)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        if isinstance(exception, KeyboardInterrupt):  # Ctrl-C: the run can go on from its last checkpoint
            status, error = "interrupted", "interrupted (Ctrl-C)"
        else:
            error = first_line(f"{type(exception).__name__}: {exception}")
            status = getattr(exception, "status", "failed")  # "pruned": a sweep's pruner stopped it
        self.metrics = self.build(trainer, pl_module, status, error)
        self.metrics.update({key: None for key in TEST_FIGURES})
        existing = self.run_dir / "metrics.json"
        try:
            if existing.is_file():
                record = read_json(existing)
                if record.get("status") == "ok" and record.get("epochs") == self.metrics["epochs"]:
                    # a finished run's record is kept: a resume in its dir failed before training further
                    return
            self.write(self.metrics)
        except (OSError, ValueError):
            pass  # the original error is the one to report

    def _log_hparams(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """One HPARAMS entry per run, with the final test metrics, so TensorBoard compares runs."""
        params = {
            key: metrics[key]
            for key in (
                "model",
                "dataset",
                "params",
                "pretrained",
                "image_size",
                "batch_size",
                "seed",
                "precision",
                "epochs",
            )
        }
        params["lr"] = self.info.get("lr")
        params = {k: v for k, v in params.items() if v is not None}
        final = {f"hparams/{k.split('/')[1]}": metrics[k] for k in TEST_FIGURES if metrics.get(k) is not None}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics=final)
