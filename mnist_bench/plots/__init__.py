"""Matplotlib figures shared by the run callbacks and the benchmark: confusion matrix and image grids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mnist_bench.utils import atomic_path  # noqa: E402


def confusion_matrix_figure(
    cm: np.ndarray, title: str = "Confusion matrix (test)", class_names: Sequence[str] | None = None
) -> Figure:
    """Counts, true class down, predicted class across (ticks named by ``class_names``, else numbered). Colour
    is log-scaled so that the off-diagonal errors show."""
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    shown = np.log1p(cm)
    im = ax.imshow(shown, cmap="Blues")
    threshold = shown.max() * 0.6
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7 if cm[i, j] >= 1000 else 8,
                    color="white" if shown[i, j] > threshold else "black",
                    fontweight="bold" if i == j else "normal",
                )
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    rotate = max(len(name) for name in names) > 2 if names else False
    ax.set_xticks(range(n), names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    ax.set_title(f"{title}\n{np.trace(cm)}/{total} correct ({acc:.2%})", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log(1 + count)")
    fig.tight_layout()
    return fig


def digit_grid_figure(
    images: np.ndarray,
    preds: np.ndarray,
    targets: np.ndarray,
    title: str,
    columns: int = 8,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """A grid of images (pixels in [0, 1]) titled 'pred (true)' by class name (else number); wrong predictions
    in red with a red frame."""

    def name(k: int) -> str:
        return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) else str(k)

    n = len(images)
    rows = max(1, math.ceil(n / columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * 1.1, rows * 1.25 + 0.5), dpi=100, squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(np.asarray(images[k]).squeeze(), cmap="gray", vmin=0, vmax=1)
        wrong = int(preds[k]) != int(targets[k])
        colour = "red" if wrong else "black"
        ax.set_title(
            f"{name(int(preds[k]))} (true {name(int(targets[k]))})" if wrong else name(int(preds[k])),
            fontsize=8,
            color=colour,
        )
        for spine in ax.spines.values():
            spine.set_edgecolor("red" if wrong else "lightgray")
            spine.set_linewidth(2.5 if wrong else 0.5)
    if n == 0:
        fig.text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def boxed_digits(
    pixels: np.ndarray, boxes: np.ndarray, truth: np.ndarray | None = None, scale: int = 4
) -> np.ndarray:
    """RGB copies of N×1×H×W digits (pixels in [0, 1]), enlarged ``scale`` times, with the predicted box drawn
    in red and, when given, the true box in green (``torchvision.utils.draw_bounding_boxes``)."""
    import torch
    from torchvision.utils import draw_bounding_boxes

    images = torch.from_numpy(np.asarray(pixels, dtype=np.float32)).clamp(0, 1).mul(255).to(torch.uint8)
    images = images.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    out = []
    for k, image in enumerate(images):
        rgb = image.expand(3, -1, -1)
        if truth is not None:
            rgb = draw_bounding_boxes(rgb, torch.as_tensor(truth[k : k + 1]) * scale, colors="lime", width=1)
        rgb = draw_bounding_boxes(rgb, torch.as_tensor(boxes[k : k + 1]) * scale, colors="red", width=2)
        out.append(rgb.permute(1, 2, 0).numpy())
    return (
        np.stack(out)
        if out
        else np.zeros((0, pixels.shape[-2] * scale, pixels.shape[-1] * scale, 3), np.uint8)
    )


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save as PNG atomically (so a reader never sees half a file) and close the figure."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
