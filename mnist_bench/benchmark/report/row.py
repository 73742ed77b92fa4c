"""The results row: what a run's ``metrics.json`` holds that the benchmark reads, and how the results table
shows it.

One :class:`Field` per key, in the table's order. The run report writes the keys, the aggregation averages or
copies them over seeds, the tables format them, a failed run's row empties its test figures, and the contract
test checks them: all from ``FIELDS``. A new column is one entry here plus the code that produces its value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal


# --- how a value reads in the table
# --------------------------------------------------------------------------------
def percent(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "—"


def number(fmt: str) -> Callable[[Any], str]:
    return lambda v: format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def parameters(v: Any) -> str:
    if not isinstance(v, int):
        return "—"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k"


def interval(v: Any) -> str:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return "—"
    return f"{100 * v[0]:.2f}–{100 * v[1]:.2f}%"


def partial_test(row: dict[str, Any]) -> bool:
    """Scored on fewer images than the whole test set (e.g. --trainer.limit_test_batches)."""
    n, full = row.get("test/images"), row.get("test/full_images")
    return isinstance(n, int) and isinstance(full, int) and n < full


def unofficial_test(row: dict[str, Any]) -> bool:
    """Scored on a test set that is not the dataset's published one (its size or md5 differs)."""
    return row.get("test/official") is False


def test_images(row: dict[str, Any]) -> str:
    n, full = row.get("test/images"), row.get("test/full_images")
    if not isinstance(n, int):
        return "—"
    text = f"{n:,} of {full:,} (partial)" if partial_test(row) else f"{n:,}"
    return f"{text} (unofficial)" if unofficial_test(row) else text


# --- the fields
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One key of the row.

    ``header`` and ``fmt``: its table column (no header: not a column). ``fmt`` takes the value, or the whole
    row when ``from_row``. ``shown``: "always", or "when_present" (in some row; the detector's localization,
    figures only the benchmark measures). ``over_seeds``: "mean" (mean ± std over a model's ok seeds), "first"
    (the first ok seed's, the same for every seed) or "own" (computed for the summary itself). ``fraction``: a
    figure in [0, 1]. ``test_figure``: scored by the test pass (empty in a failed run's row). ``contract``:
    part of metrics.json's contract (DESIGN.md).
    """

    key: str
    header: str | None = None
    fmt: Callable[[Any], str] | None = None
    from_row: bool = False
    shown: Literal["always", "when_present"] = "always"
    over_seeds: Literal["mean", "first", "own", "none"] = "none"
    fraction: bool = False
    test_figure: bool = False
    contract: bool = False


FIELDS: tuple[Field, ...] = (
    Field("model", "model", str, contract=True),
    Field("status", "status", str, contract=True),
    Field("test/acc", "test acc", percent, over_seeds="mean", fraction=True, test_figure=True, contract=True),
    Field("test/acc_ci", "95% CI (test images)", interval, shown="when_present", over_seeds="own"),
    Field("test/acc_seed_ci", "95% CI (seeds)", interval, shown="when_present", over_seeds="own"),
    Field(
        "test/f1",
        "macro F1",
        number(".4f"),
        over_seeds="mean",
        fraction=True,
        test_figure=True,
        contract=True,
    ),
    Field("test/loss", "test loss", number(".4f"), over_seeds="mean", test_figure=True, contract=True),
    Field("test/images", "test imgs", test_images, from_row=True, shown="when_present", over_seeds="first"),
    Field("test/iou", "box IoU", number(".3f"), shown="when_present", over_seeds="mean", fraction=True),
    Field("test/map50", "mAP@0.5", number(".3f"), shown="when_present", over_seeds="mean", fraction=True),
    Field("test/fallback_rate", "fallback", percent, shown="when_present", over_seeds="mean", fraction=True),
    Field("time/train_s", "train s", number(".1f"), over_seeds="mean", contract=True),
    Field("time/fit_s", "fit s", number(".1f"), over_seeds="mean", contract=True),
    Field("time/fit_su", "fit su", number(".2f"), shown="when_present", over_seeds="mean"),
    Field("epochs", "epochs", number("d"), over_seeds="first", contract=True),
    Field("params", "params", parameters, over_seeds="first", contract=True),
    Field("throughput/train_img_s", "train img/s", number(",.0f"), over_seeds="mean", contract=True),
    Field("throughput/infer_img_s", "infer img/s", number(",.0f"), over_seeds="mean", contract=True),
    Field("image_size", "px", number("d"), over_seeds="first", contract=True),
    Field("pretrained", "pretrained", lambda v: "yes" if v else "no", over_seeds="first", contract=True),
    Field("precision", "precision", str, over_seeds="first", contract=True),
    Field("hardware", "hardware", lambda v: str(v) if v else "—", shown="when_present", over_seeds="first"),
    Field("device", over_seeds="first", contract=True),
    Field("loss_kind", over_seeds="first"),
    Field("test/full_images", over_seeds="first"),
    Field("error", contract=True),
    Field("time/test_s", contract=True),
    Field("seed", contract=True),
    Field("versions", contract=True),
    Field("git_sha", contract=True),
    Field("config", contract=True),
)

TEST_FIGURES = tuple(f.key for f in FIELDS if f.test_figure)  # what the test pass logs and a failed row lacks
MEAN_OVER_SEEDS = tuple(f.key for f in FIELDS if f.over_seeds == "mean")
SAME_FOR_EVERY_SEED = tuple(f.key for f in FIELDS if f.over_seeds == "first")
FRACTIONS = tuple(f.key for f in FIELDS if f.fraction)
CONTRACT = tuple(f.key for f in FIELDS if f.contract)
# the raw csv's further columns, after the table's own and their std
CSV_EXTRA = (
    "test/full_images",
    "test/official",
    "seed",
    "seeds",
    "n_ok",
    "n_runs",
    "batch_size",
    "loss_kind",
    "error",
)


def failed_row(model: str | None, seed: int | None, error: str) -> dict[str, Any]:
    """A run that gave no figures: its model, seed and why."""
    return {
        "model": model,
        "seed": seed,
        "status": "failed",
        "error": error,
        **{k: None for k in TEST_FIGURES},
    }


def table_fields(rows: Sequence[dict[str, Any]]) -> list[Field]:
    """The columns for these rows: every "always" column, and a "when_present" one where some row has a
    value."""
    return [
        f
        for f in FIELDS
        if f.header is not None and (f.shown == "always" or any(r.get(f.key) is not None for r in rows))
    ]


def cell(row: dict[str, Any], field: Field) -> str:
    if field.from_row:
        return field.fmt(row)
    value = row.get(field.key)
    if value is None:
        return "—"
    text = field.fmt(value)
    std = row.get(f"{field.key}:std")
    if std is not None:
        text += f" ± {field.fmt(std)}"
    return text
