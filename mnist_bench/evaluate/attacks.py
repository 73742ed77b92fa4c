"""Accuracy under L-infinity attacks in pixel units of [0, 1]: FGSM and PGD from the Adversarial Robustness
Toolbox (ART; maintained by LF AI, pure-PyTorch PGD, only numpy/scipy/scikit-learn beside torch, and explicit
clip values so epsilon is in pixels). The normalisation and each model's input adapter sit inside the attacked
function, so one epsilon means the same pixels for every model. The detector's detections (score threshold,
NMS, top-1) have no gradient: it is attacked through its box classifier (``attack_logits``) and scored
whole."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mnist_bench.models.base import MNISTClassifier

EPSILONS = (0.05, 0.1, 0.2, 0.3)
PGD_STEPS = 10
PGD_STEP_FACTOR = (
    2.5  # step = 2.5 * eps / steps, Madry et al.'s rule, so the steps can cross the ball and back
)


class PixelSpaceModel(nn.Module):
    """The model as a function of [0, 1] pixels (N×1×28×28) to differentiable logits."""

    def __init__(self, model: MNISTClassifier):
        super().__init__()
        self.model = model

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model.attack_logits(self.model.dataset.normalize(pixels))


@dataclass
class AttackSettings:
    epsilons: tuple[float, ...] = EPSILONS
    pgd_steps: int = PGD_STEPS
    random_start: bool = True
    batch_size: int = 250
    seed: int = 0

    def pgd_step(self, eps: float) -> float:
        return PGD_STEP_FACTOR * eps / self.pgd_steps


def _estimator(model: MNISTClassifier):
    from art.estimators.classification import PyTorchClassifier

    size = model.dataset.image_size
    return PyTorchClassifier(
        model=PixelSpaceModel(model).eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, size, size),
        nb_classes=model.num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def adversarial_images(
    model: MNISTClassifier,
    pixels: np.ndarray,
    labels: np.ndarray,
    method: str,
    eps: float,
    settings: AttackSettings,
) -> np.ndarray:
    """``pixels`` (N×1×H×W float32 in [0, 1]) attacked by ``method`` ("fgsm" or "pgd") at ``eps``: never more
    than ``eps`` from the input in any pixel, always within [0, 1]."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch

    if eps == 0:
        return pixels.copy()
    estimator = _estimator(model)
    if method == "fgsm":
        attack = FastGradientMethod(estimator, norm=np.inf, eps=eps, batch_size=settings.batch_size)
    elif method == "pgd":
        attack = ProjectedGradientDescentPyTorch(
            estimator,
            norm=np.inf,
            eps=eps,
            eps_step=settings.pgd_step(eps),
            max_iter=settings.pgd_steps,
            num_random_init=int(settings.random_start),
            batch_size=settings.batch_size,
            verbose=False,
        )
    else:
        raise ValueError(f"unknown attack {method!r}: fgsm or pgd")
    np.random.seed(settings.seed)  # ART draws PGD's random start from numpy's global generator
    torch.manual_seed(settings.seed)
    adv = attack.generate(x=pixels.astype(np.float32), y=labels.astype(np.int64)).astype(np.float32)
    # the projection is exact in float64; float32 rounding can leave a pixel a hair outside the ball
    return np.clip(np.clip(adv, pixels - eps, pixels + eps), 0.0, 1.0)


@torch.no_grad()
def scores_of_pixels(model: MNISTClassifier, pixels: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The whole model's class scores (``class_scores``, the detector's detections included) for [0, 1]
    pixels."""
    scores = [
        model.class_scores(
            model.dataset.normalize(torch.from_numpy(pixels[start : start + batch_size]))
        ).numpy()
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(scores) if scores else np.zeros((0, model.num_classes), dtype=np.float32)


def predict_pixels(model: MNISTClassifier, pixels: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The whole model's predictions for [0, 1] pixels."""
    return scores_of_pixels(model, pixels, batch_size).argmax(axis=1)


def attacked_correct(
    model: MNISTClassifier, pixels: np.ndarray, labels: np.ndarray, settings: AttackSettings
) -> dict[str, np.ndarray]:
    """``{"clean": ..., "fgsm@0.1": ..., "pgd@0.1": ...}``: whether each image is still read right."""
    out = {"clean": predict_pixels(model, pixels) == labels}
    for eps in settings.epsilons:
        for method in ("fgsm", "pgd"):
            adv = adversarial_images(model, pixels, labels, method, eps, settings)
            out[f"{method}@{eps:g}"] = predict_pixels(model, adv) == labels
    return out
