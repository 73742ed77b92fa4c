"""Which differences between models are real: the paired tests as a Markdown section and JSON (the picture is
:func:`mnist_bench.plots.benchmark.paired_tests_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mnist_bench.benchmark.report.stats import LEVEL, PairedTest, paired_tests

PAIRED_TEST_METHOD = (
    "McNemar's exact test on the test images both models scored (only the images on which exactly one of the"
    " two is right count), for each seed both ran; p-values corrected for the number of pairs by Holm's"
    f" method; significant = Holm-adjusted p < {1 - LEVEL:.2f}. A test on one seed compares two trained"
    " models on this test set; whether the recipes differ also depends on the seed-to-seed spread (the"
    " seeds' interval in the table)."
)


def compare_models(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paired tests of the benchmark's runs, ready for benchmark.json."""
    tests, skipped = paired_tests(rows)
    return {"method": PAIRED_TEST_METHOD, "tests": [t.as_dict() for t in tests], "not_compared": skipped}


def _first_seed_tests(tests: Sequence[PairedTest]) -> dict[tuple[str, str], PairedTest]:
    """One test per pair: the one on the first seed both models ran."""
    chosen: dict[tuple[str, str], PairedTest] = {}
    for test in tests:
        chosen.setdefault((test.a, test.b), test)
    return chosen


def markdown_section(comparison: dict[str, Any]) -> str:
    tests = [
        PairedTest(**{k: v for k, v in t.items() if k not in ("significant", "reading")})
        for t in comparison["tests"]
    ]
    lines = ["## Paired tests between models", "", comparison["method"], ""]
    if not tests:
        lines.append(
            "No pair of models could be compared"
            + (": " + "; ".join(comparison["not_compared"]) if comparison["not_compared"] else ".")
        )
        return "\n".join(lines) + "\n"
    chosen = _first_seed_tests(tests)
    models = list(dict.fromkeys([t.a for t in tests] + [t.b for t in tests]))
    lines += [
        (
            "Row model minus column model, in accuracy points on the shared test images, with the"
            " Holm-adjusted p-value (* significant):"
        ),
        "",
    ]
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
            cells.append(f"{diff:+.2f} (p {short_p(test.p_holm)}){star}")
        lines.append(f"| {row_model} | " + " | ".join(cells) + " |")
    lines += ["", "In words:", ""]
    for test in tests:
        seed = f" (seed {test.seed})" if len({t.seed for t in tests}) > 1 else ""
        lines.append(f"- {test.reading()}{seed}.")
    if comparison["not_compared"]:
        lines += ["", "Not compared: " + "; ".join(comparison["not_compared"]) + "."]
    return "\n".join(lines) + "\n"


def short_p(p: float | None) -> str:
    """A p-value in a table cell: two significant digits, "<0.001" below that, "—" for none."""
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.2g}"
