"""The results table: one set of columns for the terminal, Markdown and CSV."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mnist_bench.benchmark.report.row import (
    CSV_EXTRA,
    Field,
    cell,
    partial_test,
    table_fields,
    unofficial_test,
)


def columns(rows: Sequence[dict[str, Any]]) -> list[Field]:
    """The table's columns for these rows (``mnist_bench/benchmark/report/row.py`` defines them)."""
    return table_fields(rows)


def test_set_note(rows: Sequence[dict[str, Any]]) -> str:
    """What the test columns are over, from the rows' own image counts."""
    scored = [r for r in rows if isinstance(r.get("test/images"), int)]
    if not scored:
        return "Test set: no row was scored"
    counts = sorted({r["test/images"] for r in scored})
    partial = sorted(r["model"] for r in scored if partial_test(r))
    text = f"Test set: {' / '.join(f'{n:,}' for n in counts)} test images per row"
    if partial:
        text += f"; scored on part of the test set: {', '.join(partial)} (see test imgs)"
    unofficial = sorted(r["model"] for r in rows if unofficial_test(r))
    if unofficial:
        text += (
            f"; not the published test set (its size or md5 differs, so the figures are not comparable with "
            f"published ones): {', '.join(unofficial)}"
        )
    return text


def loss_note(rows: Sequence[dict[str, Any]]) -> str:
    """Which loss the test-loss column holds, per model, when models differ."""
    kinds = {r["model"]: r.get("loss_kind") or "cross-entropy" for r in rows if r.get("status") != "failed"}
    others = {model: kind for model, kind in kinds.items() if kind != "cross-entropy"}
    if not others:
        return "Test loss: cross-entropy."
    return "Test loss: cross-entropy, except " + "; ".join(f"{m}: {k}" for m, k in others.items()) + "."


def formatted(row: dict[str, Any], cols: Sequence[Field]) -> list[str]:
    return [cell(row, field) for field in cols]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Raw values (not formatted), one column per key, std columns included where present."""
    import csv
    import io

    keys = [field.key for field in columns(rows)]
    keys += [f"{k}:std" for k in keys if any(f"{k}:std" in r for r in rows)]
    keys += [k for k in CSV_EXTRA if any(k in r for r in rows)]
    pairs = {k for k in keys if any(isinstance(r.get(k), (list, tuple)) and len(r[k]) == 2 for r in rows)}
    keys = [part for k in keys for part in ((f"{k}:low", f"{k}:high") if k in pairs else (k,))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        for k in pairs:
            low_high = row.get(k) if isinstance(row.get(k), (list, tuple)) else (None, None)
            flat[f"{k}:low"], flat[f"{k}:high"] = low_high
        writer.writerow({k: flat.get(k) for k in keys})
    return buf.getvalue()


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = columns(rows)
    header = "| " + " | ".join(field.header for field in cols) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"
    body = ["| " + " | ".join(formatted(row, cols)) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def print_rich_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cols = columns(rows)
    for i, field in enumerate(cols):
        table.add_column(field.header, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*formatted(row, cols))
    Console(width=200).print(table)
