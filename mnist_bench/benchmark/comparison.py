"""Which differences between models are real: the paired tests as a Markdown section, JSON and a picture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mnist_bench.benchmark.stats import LEVEL, PairedTest, paired_tests
from mnist_bench.plots import plt

HOW = (f"McNemar's exact test on the test images both models scored (only the images on which exactly one of the two "
       f"is right count), for each seed both ran; p-values corrected for the number of pairs by Holm's method; "
       f"significant = Holm-adjusted p < {1 - LEVEL:.2f}. A test on one seed compares two trained models on this "
       f"test set; whether the recipes differ also depends on the seed-to-seed spread (the seeds' interval in the "
       f"table).")


def compare(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paired tests of the benchmark's runs, ready for benchmark.json."""
    tests, skipped = paired_tests(rows)
    return {"method": HOW, "tests": [t.as_dict() for t in tests], "not_compared": skipped}


def _first_seed_tests(tests: Sequence[PairedTest]) -> dict[tuple[str, str], PairedTest]:
    """One test per pair: the one on the first seed both models ran."""
    chosen: dict[tuple[str, str], PairedTest] = {}
    for test in tests:
        chosen.setdefault((test.a, test.b), test)
    return chosen


def markdown_section(comparison: dict[str, Any]) -> str:
    tests = [PairedTest(**{k: v for k, v in t.items() if k not in ("significant", "reading")})
             for t in comparison["tests"]]
    lines = ["## Paired tests between models", "", comparison["method"], ""]
    if not tests:
        lines.append("No pair of models could be compared" + (": " + "; ".join(comparison["not_compared"])
                                                              if comparison["not_compared"] else "."))
        return "\n".join(lines) + "\n"
    chosen = _first_seed_tests(tests)
    models = list(dict.fromkeys([t.a for t in tests] + [t.b for t in tests]))
    lines += ["Row model minus column model, in accuracy points on the shared test images, with the Holm-adjusted "
              "p-value (* significant):", ""]
    lines.append("| | " + " | ".join(models) + " |")
    lines.append("|---|" + "---:|" * len(models))
    for row_model in models:
        cells = []
        for col_model in models:
            test = chosen.get((row_model, col_model)) or chosen.get((col_model, row_model))
            if row_model == col_model or test is None:
                cells.append("—")
                continue
            sign = 1 if test.a == row_model else -1
            diff = sign * 100 * (test.correct_a - test.correct_b) / test.n
            star = "*" if test.significant else ""
            cells.append(f"{diff:+.2f} (p {_short(test.p_holm)}){star}")
        lines.append(f"| {row_model} | " + " | ".join(cells) + " |")
    lines += ["", "In words:", ""]
    for test in tests:
        seed = f" (seed {test.seed})" if len({t.seed for t in tests}) > 1 else ""
        lines.append(f"- {test.reading()}{seed}.")
    if comparison["not_compared"]:
        lines += ["", "Not compared: " + "; ".join(comparison["not_compared"]) + "."]
    return "\n".join(lines) + "\n"


def _short(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


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
            text[r][c] = f"{v:+.2f}\np {_short(t['p_holm'])}"
            significant[r, c] = t["significant"]
    limit = max(float(np.nanmax(np.abs(diff))), 0.05)
    fig, ax = plt.subplots(figsize=(1.3 * k + 2.2, 1.1 * k + 1.4), dpi=110)
    image = ax.imshow(diff, cmap="RdBu", vmin=-limit, vmax=limit)
    for r in range(k):
        for c in range(k):
            if text[r][c]:
                dark = abs(diff[r, c]) > 0.6 * limit  # white on the darkest cells
                ax.text(c, r, text[r][c], ha="center", va="center", fontsize=8, color="white" if dark else "black",
                        fontweight="bold" if significant[r, c] else "normal")
            if significant[r, c]:
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set_xticks(range(k), models, rotation=30, ha="right")
    ax.set_yticks(range(k), models)
    fig.colorbar(image, ax=ax, label="row minus column (accuracy points)")
    ax.set_title("Paired tests (McNemar, Holm-adjusted p; framed: significant)", fontsize=10)
    fig.tight_layout()
    return fig
