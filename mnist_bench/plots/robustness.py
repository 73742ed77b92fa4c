"""The robustness report's pictures: accuracy per corruption as a heat map, a sample of each corruption,
accuracy against epsilon, reliability diagrams, and accuracy against FLOPs and latency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_bench.evaluate.corruptions import CORRUPTIONS
from mnist_bench.plots import plt, save_figure


def corruption_heatmap(records: Sequence[dict[str, Any]], subtitle: str):
    names = ["clean", *CORRUPTIONS]
    acc = (
        np.array(
            [[r["accuracy"]["clean" if n == "clean" else f"corruption/{n}"] for n in names] for r in records]
        )
        * 100
    )
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.55 * len(records)), dpi=110)
    image = ax.imshow(acc, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(
                j,
                i,
                f"{acc[i, j]:.0f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if acc[i, j] < 60 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(records)), [r["model"] for r in records], fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(f"Accuracy per corruption\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def corruption_samples(clean: np.ndarray, corrupted: dict[str, np.ndarray], labels: np.ndarray):
    """One row per corruption (the clean images first), the same test images in each column."""
    rows = [("clean", clean), *corrupted.items()]
    cols = clean.shape[0]
    fig, axes = plt.subplots(len(rows), cols, figsize=(0.8 * cols + 1.4, 0.8 * len(rows)), dpi=100)
    for i, (name, images) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(images[j].squeeze(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if i == 0:
                ax.set_title(str(labels[j]), fontsize=8)
    fig.suptitle("The same test images under each corruption (label above)", fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_vs_epsilon(records: Sequence[dict[str, Any]], subtitle: str):
    fig, ax = plt.subplots(figsize=(6.8, 4.6), dpi=110)
    for k, r in enumerate(records):
        eps = [0.0, *r["settings"]["attacks"]["epsilons"]]
        color = f"C{k}"
        for method, style in (("pgd", "-"), ("fgsm", "--")):
            acc = [r["accuracy"]["attack/clean"]] + [r["accuracy"][f"attack/{method}@{e:g}"] for e in eps[1:]]
            ax.plot(
                eps,
                np.array(acc) * 100,
                style,
                marker="o",
                ms=4,
                color=color,
                label=f"{r['model']} {method.upper()}",
            )
    ax.set_xlabel("epsilon (L-infinity, pixels in [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Accuracy under attack (solid PGD, dashed FGSM)\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def _reliability_line(ax, bins: dict[str, list], label: str, **style) -> None:
    conf = [c for c, n in zip(bins["confidence"], bins["count"], strict=True) if n]
    acc = [a for a, n in zip(bins["accuracy"], bins["count"], strict=True) if n]
    ax.plot(conf, acc, marker="o", ms=3, label=label, **style)


def reliability_diagrams(records: Sequence[dict[str, Any]], subtitle: str):
    """One panel per model: accuracy against confidence per bin, before and after temperature scaling, with
    the share of images per bin below."""
    fig, axes = plt.subplots(1, len(records), figsize=(3.2 * len(records), 3.6), dpi=110, squeeze=False)
    for ax, r in zip(axes[0], records, strict=True):
        cal = r["calibration"]
        ax.plot([0, 1], [0, 1], ":", color="grey")
        _reliability_line(ax, cal["bins_before"], f"as trained (ECE {100 * cal['before']['ece']:.2f}%)")
        _reliability_line(
            ax, cal["bins_after"], f"T={cal['temperature']:.2f} (ECE {100 * cal['after']['ece']:.2f}%)"
        )
        ax.set_title(r["model"], fontsize=9)
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(f"Reliability diagrams (test set, 15 bins)\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def reliability_overlay(records: Sequence[dict[str, Any]], subtitle: str):
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=110)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for k, r in enumerate(records):
        cal = r["calibration"]
        _reliability_line(
            ax, cal["bins_before"], f"{r['model']} (ECE {100 * cal['before']['ece']:.2f}%)", color=f"C{k}"
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"All models, as trained\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_vs_cost(records: Sequence[dict[str, Any]], subtitle: str):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for ax, (key, label) in zip(
        axes, (("flops", "MFLOPs per image (log)"), ("latency", "batch-1 latency, ms (log)")), strict=True
    ):
        for k, r in enumerate(records):
            x = r["cost"]["flops"] / 1e6 if key == "flops" else r["cost"]["latency"]["median_ms"]
            for name, marker in (("clean", "o"), ("corruption/mean", "s")):
                y = 100 * r["accuracy"][name]
                ax.scatter(x, y, marker=marker, color=f"C{k}", s=40)
            ax.annotate(
                r["model"],
                (x, 100 * r["accuracy"]["clean"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%): circle clean, square corruption mean")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Accuracy against cost\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def write_figures(
    records: Sequence[dict[str, Any]],
    out: Path,
    subtitle: str,
    samples: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | None,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        save_figure(corruption_heatmap(records, subtitle), out / "corruption_heatmap.png"),
        save_figure(accuracy_vs_epsilon(records, subtitle), out / "accuracy_vs_epsilon.png"),
        save_figure(reliability_diagrams(records, subtitle), out / "reliability_diagrams.png"),
        save_figure(reliability_overlay(records, subtitle), out / "reliability_overlay.png"),
        save_figure(accuracy_vs_cost(records, subtitle), out / "accuracy_vs_cost.png"),
    ]
    if samples is not None:
        paths.append(save_figure(corruption_samples(*samples), out / "corruption_samples.png"))
    return paths
