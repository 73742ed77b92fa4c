"""Whether a model's confidence can be trusted: expected calibration error (torchmetrics), negative
log-likelihood and Brier score, before and after temperature scaling fitted on the validation split (Guo et
al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

N_BINS = 15  # equal-width confidence bins, as in Guo et al.
MIN_PROB = 1e-7  # test_predictions.npz keeps float16 scores: a probability below float16's range reads as 0


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """N×classes scores as a distribution per image: floored at ``MIN_PROB`` and divided by their sum. A
    classifier's softmax is unchanged (up to float16's rounding); the detector's scores (each class's best
    detection score) become its share of the total."""
    p = np.maximum(np.asarray(scores, dtype=np.float64), MIN_PROB)
    return p / p.sum(axis=1, keepdims=True)


def ece(probs: np.ndarray, target: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error (L1, top-label, equal-width bins): torchmetrics'
    MulticlassCalibrationError."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    p = torch.as_tensor(probs, dtype=torch.float32)
    return float(
        multiclass_calibration_error(
            p, torch.as_tensor(target, dtype=torch.long), num_classes=p.shape[1], n_bins=n_bins, norm="l1"
        )
    )


def nll(probs: np.ndarray, target: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (nats)."""
    return float(-np.log(probs[np.arange(len(target)), target]).mean())


def brier(probs: np.ndarray, target: np.ndarray) -> float:
    """Multi-class Brier score: the mean over images of the squared distance to the one-hot label (0 to 2)."""
    onehot = np.eye(probs.shape[1])[target]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): temperature scaling on the log-probabilities (the logits up to a constant per
    image)."""
    z = np.log(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, target: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the NLL of ``scaled(probs, T)`` (a one-dimensional bounded
    search)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(scaled(probs, float(np.exp(log_t))), target),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def reliability(probs: np.ndarray, target: np.ndarray, n_bins: int = N_BINS) -> dict[str, list[float | int]]:
    """Per confidence bin: the images in it, their mean confidence and their accuracy (None for an empty
    bin)."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == target
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    right_sum = np.bincount(which, weights=right, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, right_sum / count
    return {
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": [None if c == 0 else float(v) for c, v in zip(count, mean_conf, strict=True)],
        "accuracy": [None if c == 0 else float(v) for c, v in zip(count, acc, strict=True)],
    }


def ece_of(confidence: np.ndarray, right: np.ndarray, n_bins: int = N_BINS) -> float:
    """The same ECE from each image's top confidence and whether it was right (numpy, for the bootstrap)."""
    which = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(which, weights=confidence - right, minlength=n_bins)
    return float(np.abs(gap).sum() / max(len(confidence), 1))


BOOTSTRAP = 1000  # resamples of the test images for the intervals and paired tests of ECE


def ece_bootstrap(
    confidence: np.ndarray,
    right: np.ndarray,
    seed: int = 0,
    others: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """ECE on ``BOOTSTRAP`` resamples of the test images (rows), for this model and, on the very same
    resamples, for each of ``others`` (columns after the first): a paired bootstrap."""
    rng = np.random.default_rng(seed)
    models = [(confidence, right), *(others or [])]
    out = np.empty((BOOTSTRAP, len(models)))
    for b in range(BOOTSTRAP):
        pick = rng.integers(0, len(confidence), len(confidence))
        out[b] = [ece_of(c[pick], r[pick]) for c, r in models]
    return out


@dataclass
class Calibration:
    temperature: float
    before: dict[str, float]  # ece, nll, brier on the test set as the model gives them
    after: dict[str, float]  # the same after temperature scaling fitted on the validation split
    bins_before: dict[str, list[float | int]]
    bins_after: dict[str, list[float | int]]
    confidence_before: np.ndarray  # each test image's top probability, for the bootstrap (not stored in JSON)
    confidence_after: np.ndarray
    right: np.ndarray


def scores_of(probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"ece": ece(probs, target), "nll": nll(probs, target), "brier": brier(probs, target)}


def calibrate(
    val_scores: np.ndarray, val_target: np.ndarray, test_scores: np.ndarray, test_target: np.ndarray
) -> Calibration:
    """The test set's calibration before and after the temperature fitted on the validation split."""
    val, test = as_probabilities(val_scores), as_probabilities(test_scores)
    temperature = fit_temperature(val, val_target)
    after = scaled(test, temperature)
    return Calibration(
        temperature,
        scores_of(test, test_target),
        scores_of(after, test_target),
        reliability(test, test_target),
        reliability(after, test_target),
        test.max(axis=1),
        after.max(axis=1),
        (test.argmax(axis=1) == test_target).astype(np.float64),
    )
