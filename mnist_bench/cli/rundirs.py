"""Where a run writes, and which checkpoint ``--ckpt_path`` means.

Every run owns ``<root>/lightning_logs/<model>/version_<n>``; ``fit --ckpt_path last`` continues in the newest
run of that model that has a ``last.ckpt``, and ``test``/``validate --ckpt_path last`` score it in a new
folder. A checkpoint is read with ``torch.load(weights_only=True)`` before anything is built, so that a
damaged or unsafe file stops the command with one line.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_bench.callbacks.history import history_in
from mnist_bench.errors import UserFacingError
from mnist_bench.inference.checkpoints import load_failure
from mnist_bench.utils import atomic_path

# the line in which fit, test and validate name their run folder before any training (the benchmark and sweeps
# read it)
RUN_DIR_LINE = "mnist-bench: run dir "

# Lightning's special --ckpt_path values that name no checkpoint this project writes ("best" needs a monitored
# metric)
UNSUPPORTED_CKPT_PATHS = ("best", "hpc", "registry")


def model_logs(root: str | Path, model: str) -> Path:
    return Path(root) / "lightning_logs" / model


def next_version(logs: Path) -> int:
    """The next ``version_<n>`` under ``logs``, as Lightning's TensorBoard and CSV loggers number them."""
    taken = [
        int(p.name.removeprefix("version_"))
        for p in logs.glob("version_*")
        if p.is_dir() and p.name.removeprefix("version_").isdigit()
    ]
    return max(taken) + 1 if taken else 0


def run_version(run_dir: Path, logs: Path) -> int | None:
    """n for ``logs/version_<n>`` (reached by any path or link), None for a folder elsewhere."""
    real = run_dir.resolve()
    number = real.name.removeprefix("version_")
    same = real.parent == logs.resolve() and real.name.startswith("version_")
    return int(number) if same and number.isdigit() else None


def not_a_folder(root: Path) -> Path | None:
    """The first of ``root/lightning_logs``, ``root`` and its parents that exists and is not a folder."""
    return next(
        (p for p in (root / "lightning_logs", root, *root.parents) if p.exists() and not p.is_dir()), None
    )


def newest_last_checkpoint(root: str | Path, model: str, subcommand: str) -> tuple[int, Path]:
    """The version and ``last.ckpt`` of the newest run of ``model`` that has one (``--ckpt_path last``)."""
    logs = model_logs(root, model)
    versions = {
        int(v): p
        for p in logs.glob("version_*/checkpoints/last.ckpt")
        if (v := p.parent.parent.name.removeprefix("version_")).isdigit()
    }
    if not versions:
        action = "resume" if subcommand == "fit" else subcommand
        fix = (
            "start a new run without --ckpt_path last"
            if subcommand == "fit"
            else "train one first (mnist-bench fit), or give a .ckpt path"
        )
        raise UserFacingError(
            f"nothing to {action}: no {logs}/version_*/checkpoints/last.ckpt for --ckpt_path last. Fix: {fix}"
        )
    version = max(versions)
    return version, versions[version]


@dataclass(frozen=True)
class RunDir:
    """A run's folder, ``<root>/lightning_logs/<name>/version_<n>``, decided once before the Trainer is built
    and handed as this value to the loggers, the checkpoints and the callbacks that write into it."""

    root: Path  # the folder whose lightning_logs/ holds the runs
    name: str  # the model's name, and the dataset's unless it is MNIST (cli.app.run_name)
    version: int

    @classmethod
    def choose(cls, root: str | Path, name: str, resumed: Path | None = None) -> RunDir:
        """The resumed run's folder when ``resumed`` is one of this root's runs of ``name``, else the next
        version."""
        logs = model_logs(root, name)
        version = run_version(resumed, logs) if resumed is not None else None
        return cls(Path(root), name, next_version(logs) if version is None else version)

    @property
    def logs(self) -> Path:
        return self.root / "lightning_logs"

    @property
    def path(self) -> Path:
        return self.logs / self.name / f"version_{self.version}"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"


def check_checkpoint(path: str | Path) -> tuple[dict, list[dict]]:
    """Refuses a missing file, and one that ``torch.load(weights_only=True)`` will not read: unsafe (its
    pickled code never runs), truncated or not a checkpoint. Returns its hyperparameters and its per-epoch
    history."""
    if not Path(path).is_file():
        raise UserFacingError(
            f"checkpoint {path} not found. Fix: give an existing .ckpt file, or --ckpt_path last "
            "to resume the newest run of this model"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserFacingError(load_failure(path, err)) from None
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else None
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("state_dict"), dict)
        or not isinstance(hparams, dict)
    ):
        raise UserFacingError(load_failure(path, ValueError("no state_dict and hyper_parameters in it")))
    return hparams, history_in(ckpt)


class CompleteCheckpointIO(TorchCheckpointIO):
    """Each checkpoint is written to a temporary file in its own folder, synced, and renamed into place, so a
    full disk leaves the previous checkpoint (and last.ckpt) as they were and no partial file; the error names
    the checkpoint's folder. (Lightning 2.6's writer stages the file in the system's temporary folder, which
    may be on another disk, and copies it over: a failed copy leaves a truncated checkpoint.
    Lightning-AI/pytorch-lightning#21253 asks to write in place; removable once a release does.)"""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)  # refuses them, as Lightning's does
        path = Path(path)
        buffer = io.BytesIO()  # serialized first: torch.save turns a failed file write into a RuntimeError
        torch.save(checkpoint, buffer)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path.parent)) from err
