"""The benchmark's figures: training curves, accuracy versus training time, the paired tests' matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import ScalarFormatter

from mnist_bench.benchmark.report.comparison import short_p
from mnist_bench.plots import plt, save_figure


def curves_figure(rows: list[dict[str, Any]]):
    """Loss and accuracy per epoch, every model on shared axes: solid = train, dashed = validation."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    colours = plt.get_cmap("tab10")
    for i, row in enumerate(rows):
        history = row.get("history") or []
        if not history:
            continue
        epochs = [h["epoch"] + 1 for h in history]
        colour = colours(i % 10)
        for stage, style in (("train", "-"), ("val", "--")):
            loss = [h.get(f"{stage}/loss") for h in history]
            acc = [h.get(f"{stage}/acc") for h in history]
            label = f"{row['model']} {stage}"
            ax_loss.plot(epochs, loss, style, color=colour, marker="o", ms=3, label=label)
            if any(a is not None for a in acc):  # the detector has no train accuracy
                ax_acc.plot(
                    epochs,
                    [100 * a if a is not None else None for a in acc],
                    style,
                    color=colour,
                    marker="o",
                    ms=3,
                    label=label,
                )
    ax_loss.set_yscale("log")
    detection = sorted(
        {r["model"] for r in rows if (r.get("loss_kind") or "cross-entropy") != "cross-entropy"}
    )
    ax_loss.set_title(
        "loss per epoch (log scale)"
        + (f"\n{', '.join(detection)}: detection loss, the others cross-entropy" if detection else ""),
        fontsize=10,
    )
    ax_acc.set_title("accuracy per epoch (%)")
    ax_acc.set_ylim(top=100)
    lows = [100 * h[k] for r in rows for h in r.get("history") or [] for k in ("val/acc",) if h.get(k)]
    if lows:
        ax_acc.set_ylim(max(80.0, min(lows) - 0.5), 100)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if ax_acc.get_legend_handles_labels()[0]:  # no curves when every run failed
        ax_acc.legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle("Training curves (solid: train, dashed: validation)", fontsize=11)
    fig.tight_layout()
    return fig


def tradeoff_figure(summary: list[dict[str, Any]], subtitle: str = ""):
    """Test accuracy against training time, one point per model (error bars when there are several seeds)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6), dpi=110)
    for row in summary:
        if row.get("test/acc") is None or row.get("time/train_s") is None:
            continue
        x, y = row["time/train_s"], 100 * row["test/acc"]
        xerr = row.get("time/train_s:std")
        yerr = 100 * row["test/acc:std"] if row.get("test/acc:std") is not None else None
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=7, capsize=3)
        ax.annotate(row["model"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("training time (s, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy versus training time" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def write_plots(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], out: Path, subtitle: str = ""
) -> list[Path]:
    first_ok = {}
    for row in rows:
        if row.get("status") == "ok":
            first_ok.setdefault(row["model"], row)
    written = [
        save_figure(curves_figure(list(first_ok.values())), out / "training_curves.png"),
        save_figure(tradeoff_figure(summary, subtitle), out / "accuracy_vs_time.png"),
    ]
    # each model's confusion matrix and misclassified digits (and the detector's boxes), drawn by its run
    # (first seed)
    for model, row in first_ok.items():
        if not row.get("run_dir"):
            continue
        run_dir = Path(row["run_dir"])
        for name in ("confusion_matrix", "misclassified", "detections"):
            src = run_dir / f"{name}.png"
            if src.is_file():
                dst = out / f"{name}_{model}.png"
                dst.write_bytes(src.read_bytes())
                written.append(dst)
    return written


def paired_tests_figure(comparison: dict[str, Any]):
    """A matrix of accuracy differences (row minus column, points), coloured by size, Holm-adjusted p-values
    written in, significant cells framed. None when nothing was compared."""
    tests = comparison["tests"]
    if not tests:
        return None
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for t in tests:
        chosen.setdefault((t["a"], t["b"]), t)
    models = list(dict.fromkeys([t["a"] for t in tests] + [t["b"] for t in tests]))
    k = len(models)
    diff = np.full((k, k), np.nan)
    text = [["" for _ in range(k)] for _ in range(k)]
    significant = np.zeros((k, k), dtype=bool)
    for (a, b), t in chosen.items():
        i, j = models.index(a), models.index(b)
        d = 100 * (t["correct_a"] - t["correct_b"]) / t["n"]
        diff[i, j], diff[j, i] = d, -d
        for r, c, v in ((i, j, d), (j, i, -d)):
            text[r][c] = f"{v:+.2f}\np {short_p(t['p_holm'])}"
            significant[r, c] = t["significant"]
    limit = max(float(np.nanmax(np.abs(diff))), 0.05)
    fig, ax = plt.subplots(figsize=(1.3 * k + 2.2, 1.1 * k + 1.4), dpi=110)
    image = ax.imshow(diff, cmap="RdBu", vmin=-limit, vmax=limit)
    for r in range(k):
        for c in range(k):
            if text[r][c]:
                dark = abs(diff[r, c]) > 0.6 * limit  # white on the darkest cells
                ax.text(
                    c,
                    r,
                    text[r][c],
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                    fontweight="bold" if significant[r, c] else "normal",
                )
            if significant[r, c]:
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xticks(range(k), models, rotation=30, ha="right")
    ax.set_yticks(range(k), models)
    fig.colorbar(image, ax=ax, label="row minus column (accuracy points)")
    ax.set_title("Paired tests (McNemar, Holm-adjusted p; framed: significant)", fontsize=10)
    fig.tight_layout()
    return fig
