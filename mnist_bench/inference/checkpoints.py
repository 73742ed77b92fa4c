"""A trained model back from its checkpoint, for prediction and export, and its class probabilities."""

from __future__ import annotations

import importlib
import inspect
import pickle
from pathlib import Path

import torch
from torch import Tensor

import mnist_bench.models  # noqa: F401  (the model classes a checkpoint may name)
from mnist_bench.allowlist import ALLOW_IMPORTS_ENV, ALLOW_IMPORTS_FLAG, allowed, within
from mnist_bench.errors import UserFacingError, one_line
from mnist_bench.models.base import MNISTClassifier

# hyperparameters that only training needs (the optimizer and schedule), or that would fetch ImageNet weights
# the checkpoint's own weights replace
TRAINING_ONLY = {"optimizer": None, "scheduler": None, "weights": "none"}


class CheckpointError(UserFacingError):
    """The checkpoint is missing, unsafe, or not an mnist-bench model."""


def load_failure(path: str | Path, err: BaseException) -> str:
    """One line for a checkpoint that ``torch.load(weights_only=True)`` would not read: refused, when it
    carries pickled code (which never runs), or damaged."""
    text = one_line(err)
    if isinstance(err, pickle.UnpicklingError):
        reason = text[text.find("Unsupported") :].split(". ")[0] if "Unsupported" in text else text[:200]
        return (
            f"checkpoint {path} refused: it holds more than tensors and plain data, and loading it could run "
            f"code ({reason}). Use a checkpoint written by mnist-bench, from a source you trust"
        )
    reason = text.split(". ")[0][:200] or type(err).__name__
    return (
        f"checkpoint {path} is damaged or not a checkpoint ({reason}). Fix: use another one, e.g. the run's"
        " last.ckpt"
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file, or a run dir (``lightning_logs/<model>/version_<n>``) meaning its
    ``checkpoints/last.ckpt``."""
    path = Path(path)
    if path.is_dir():  # a run dir, or its checkpoints/ folder
        path = path / "last.ckpt" if (path / "last.ckpt").is_file() else path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found. Fix: pass a .ckpt file or a run dir, e.g. "
            "--ckpt_path lightning_logs/cnn/version_0"
        )
    return path


def load_trained(
    path: str | Path, device: str | torch.device = "cpu", allow_imports: list[str] | tuple[str, ...] = ()
) -> MNISTClassifier:
    """Rebuilds the model from the checkpoint's hyperparameters and loads its weights, all with
    ``torch.load(weights_only=True)``; only the project's own model classes are built, and those of the
    packages in ``allow_imports`` (a user's own, allowed on the command line)."""
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(load_failure(path, err)) from None
    hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    class_path = str(hparams.pop("_class_path", ""))
    hparams.pop("_instantiator", None)
    cls = _model_class(path, class_path, allow_imports)
    class_name = class_path.rsplit(".", 1)[-1]
    if (
        cls is None
        or not (inspect.isclass(cls) and issubclass(cls, MNISTClassifier))
        or "state_dict" not in ckpt
    ):
        raise CheckpointError(
            f"{path} is not an mnist-bench model checkpoint (no model class or weights in it)"
        )
    for key, value in TRAINING_ONLY.items():
        if key in hparams:
            hparams[key] = value
    try:
        model = cls(**hparams)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError, UserFacingError) as err:
        raise CheckpointError(f"{path} does not fit {class_name}: {one_line(err, 300)}") from None
    return model.to(device).eval()


def _model_class(path: Path, class_path: str, allow_imports: list[str] | tuple[str, ...]) -> type | None:
    module, _, name = class_path.rpartition(".")
    if within(module, "mnist_bench"):
        # the project's own models, under their names now or before a rename (the model modules keep aliases)
        if not within(module, "mnist_bench.models"):
            return None
        try:
            return getattr(importlib.import_module(module), name, None)
        except ImportError:
            return None
    if not module:
        return None
    if not allowed(class_path, allow_imports):
        package = module.split(".")[0]
        raise CheckpointError(
            f"{path} holds a {class_path}, outside mnist_bench. Fix: if it is your own model, "
            f"allow its package: {ALLOW_IMPORTS_FLAG} {package} (or {ALLOW_IMPORTS_ENV}={package})"
        )
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError as err:
        raise CheckpointError(
            f"{path} holds a {class_path}, which does not import ({err}). Fix: put its package on PYTHONPATH"
        ) from None


@torch.no_grad()
def class_probabilities(model: MNISTClassifier, x: Tensor) -> Tensor:
    """N×classes scores for a normalized batch (``model.class_scores``): the softmax of a classifier's logits;
    for the detector, each class's best detection score, or the box classifier's softmax for an image with no
    detection."""
    return model.class_scores(x)
