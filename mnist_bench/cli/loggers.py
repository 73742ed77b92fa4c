"""The experiment loggers that write into the run's folder.

Every run owns ``<root>/lightning_logs/<model>/version_<n>``: metrics.json, checkpoints and figures go there
whatever loggers are on. ``--logger tensorboard,csv,mlflow,wandb`` (TensorBoard alone by default) builds
Lightning's loggers pointed at that folder; loggers given in full under ``trainer.logger`` are kept as they
are, beside it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mnist_bench.cli.rundirs import RunDir
from mnist_bench.errors import ConfigError

DEFAULT_LOGGERS = "tensorboard"
# what each short name needs beyond Lightning, and how to get it
NEEDS = {"mlflow": ("mlflow", "pip install mlflow-skinny"), "wandb": ("wandb", "pip install wandb")}


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run continues its folder's metrics.csv (Lightning's
    deletes it when the writer starts, before the resume is even accepted)."""

    @property
    def experiment(self):  # noqa: ANN201 (Lightning's writer, or its rank-zero dummy)
        if self._experiment is not None or rank_zero_only.rank != 0:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = path.read_text() if path.is_file() else ""
        writer = super().experiment
        if kept:
            path.write_text(kept)
            writer.metrics_keys = next(
                csv.reader(io.StringIO(kept)), []
            )  # the header: later rows append under it
        return writer


def logger_names(value: str | None) -> list[str]:
    """``--logger`` as a list of short names; an unknown or unavailable one is a config error."""
    names = [n.strip().lower() for n in (DEFAULT_LOGGERS if value is None else value).split(",") if n.strip()]
    known = ("tensorboard", "csv", *NEEDS)
    if not names:
        raise ConfigError(
            f"--logger is empty. Fix: one or more of {', '.join(known)}, comma-separated, or "
            "--trainer.logger=false for no logger"
        )
    for name in names:
        if name not in known:
            raise ConfigError(
                f"--logger {name}: unknown logger. Fix: one or more of {', '.join(known)}, "
                "comma-separated (or a full class under trainer.logger)"
            )
        if name in NEEDS and importlib.util.find_spec(NEEDS[name][0]) is None:
            raise ConfigError(
                f"--logger {name} needs the {NEEDS[name][0]} package, which is not installed. "
                f"Fix: {NEEDS[name][1]}"
            )
    return list(dict.fromkeys(names))


def build_loggers(names: list[str], run_dir: RunDir) -> list[Logger]:
    """Lightning's loggers for ``names``, all writing into (or naming) the run's folder."""
    root, model, version, run = run_dir.logs, run_dir.name, run_dir.version, run_dir.path
    loggers: list[Logger] = []
    for name in names:
        if name == "tensorboard":
            loggers.append(
                TensorBoardLogger(save_dir=str(root), name=model, version=version, default_hp_metric=False)
            )
        elif name == "csv":
            loggers.append(ContinuingCSVLogger(save_dir=str(root), name=model, version=version))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            # A local file store beside the runs (MLflow 3 keeps it in maintenance mode and asks for this
            # opt-in; a database store needs the full mlflow package and a server-side schema). The MLflow run
            # is named for the run's folder.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(
                MLFlowLogger(
                    experiment_name=f"mnist-bench/{model}",
                    run_name=f"version_{version}",
                    tracking_uri=(root / "mlruns").resolve().as_uri(),
                    tags={"run_dir": str(run)},
                )
            )
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            run.mkdir(parents=True, exist_ok=True)
            loggers.append(
                WandbLogger(
                    project="mnist-bench", name=f"{model}/version_{version}", save_dir=str(run), offline=True
                )
            )
    return loggers
