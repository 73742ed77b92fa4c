"""The results table: one set of columns for the terminal, Markdown and CSV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "—"


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def partial_test(row: dict[str, Any]) -> bool:
    """Scored on fewer images than the whole test set (e.g. --trainer.limit_test_batches)."""
    n, full = row.get("test/images"), row.get("test/full_images")
    return isinstance(n, int) and isinstance(full, int) and n < full


def unofficial_test(row: dict[str, Any]) -> bool:
    """Scored on a test set that is not the dataset's published one (its size or md5 differs)."""
    return row.get("test/official") is False


def _test_images(row: dict[str, Any]) -> str:
    n, full = row.get("test/images"), row.get("test/full_images")
    if not isinstance(n, int):
        return "—"
    text = f"{n:,} of {full:,} (partial)" if partial_test(row) else f"{n:,}"
    return f"{text} (unofficial)" if unofficial_test(row) else text


def _interval(v: Any) -> str:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return "—"
    return f"{100 * v[0]:.2f}–{100 * v[1]:.2f}%"


def _params(v: Any) -> str:
    if not isinstance(v, int):
        return "—"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k"


# (key in metrics.json, header, formatter)
COLUMNS: list[tuple[str, str, Callable[[Any], str] | None]] = [
    ("model", "model", str),
    ("status", "status", str),
    ("test/acc", "test acc", _pct),
    ("test/acc_ci", "95% CI (test images)", _interval),
    ("test/acc_seed_ci", "95% CI (seeds)", _interval),
    ("test/f1", "macro F1", _num(".4f")),
    ("test/loss", "test loss", _num(".4f")),
    ("test/images", "test imgs", None),  # formatted from the row (see _test_images)
    ("time/train_s", "train s", _num(".1f")),
    ("time/fit_s", "fit s", _num(".1f")),
    ("time/fit_su", "fit su", _num(".2f")),
    ("epochs", "epochs", _num("d")),
    ("params", "params", _params),
    ("throughput/train_img_s", "train img/s", _num(",.0f")),
    ("throughput/infer_img_s", "infer img/s", _num(",.0f")),
    ("image_size", "px", _num("d")),
    ("pretrained", "pretrained", lambda v: "yes" if v else "no"),
    ("precision", "precision", str),
    ("hardware", "hardware", lambda v: str(v) if v else "—"),
]
# shown only when some row has them (the detector's localization)
OPTIONAL_COLUMNS: list[tuple[str, str, Callable[[Any], str] | None]] = [
    ("test/iou", "box IoU", _num(".3f")),
    ("test/map50", "mAP@0.5", _num(".3f")),
    ("test/fallback_rate", "fallback", _pct),
]


# shown only when some row has them (seed units are measured by the benchmark, not by a single run)
SOMETIMES = {"time/fit_su", "hardware", "test/images", "test/acc_ci", "test/acc_seed_ci"}


def columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, Callable[[Any], str]]]:
    extra = [c for c in OPTIONAL_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    cols = [c for c in COLUMNS if c[0] not in SOMETIMES or any(r.get(c[0]) is not None for r in rows)]
    first = 2 + sum(key in ("test/acc", "test/f1", "test/loss", "test/images", "test/acc_ci", "test/acc_seed_ci")
                    for key, _, _ in cols)
    return cols[:first] + extra + cols[first:]


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
        text += (f"; not the published test set (its size or md5 differs, so the figures are not comparable with "
                 f"published ones): {', '.join(unofficial)}")
    return text


def loss_note(rows: Sequence[dict[str, Any]]) -> str:
    """Which loss the test-loss column holds, per model, when models differ."""
    kinds = {r["model"]: r.get("loss_kind") or "cross-entropy" for r in rows if r.get("status") != "failed"}
    others = {model: kind for model, kind in kinds.items() if kind != "cross-entropy"}
    if not others:
        return "Test loss: cross-entropy."
    return "Test loss: cross-entropy, except " + "; ".join(f"{m}: {k}" for m, k in others.items()) + "."


def _cell(row: dict[str, Any], key: str, fmt: Callable[[Any], str] | None) -> str:
    if fmt is None:
        return _test_images(row)
    value = row.get(key)
    if value is None:
        return "—"
    text = fmt(value)
    std = row.get(f"{key}:std")
    if std is not None:
        text += f" ± {fmt(std)}"
    return text


def formatted(row: dict[str, Any], cols: Sequence[tuple[str, str, Callable[[Any], str]]] = COLUMNS) -> list[str]:
    return [_cell(row, key, fmt) for key, _, fmt in cols]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Raw values (not formatted), one column per key, std columns included where present."""
    import csv
    import io

    keys = [key for key, _, _ in columns(rows)]
    keys += [f"{k}:std" for k in keys if any(f"{k}:std" in r for r in rows)]
    keys += [k for k in ("test/full_images", "test/official", "seed", "seeds", "n_ok", "n_runs", "batch_size", "loss_kind", "error")
             if any(k in r for r in rows)]
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
    header = "| " + " | ".join(h for _, h, _ in cols) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"
    body = ["| " + " | ".join(formatted(row, cols)) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def print_rich_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cols = columns(rows)
    for i, (_, header, _) in enumerate(cols):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*formatted(row, cols))
    Console(width=200).print(table)
