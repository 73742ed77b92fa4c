"""How far the benchmark's figures can be trusted: intervals for accuracy and paired tests between models.

- An accuracy measured on n test images is a binomial proportion: its 95% interval is Wilson's score interval
  (statsmodels' ``proportion_confint``), the test set's share of the uncertainty.
- Over seeds, the mean accuracy gets Student's t interval (scipy): the training run's share.
- Two models scored on the same test images are compared image by image with McNemar's exact test
  (statsmodels), which looks only at the images on which exactly one of them is right; the family of pairwise
  tests is corrected for multiple comparisons by Holm's method.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEVEL = 0.95  # every interval is a 95% interval; every test is at the 5% level after Holm's correction


def wilson_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The interval for a proportion of ``correct`` out of ``n`` (Wilson's score interval)."""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(correct, n, alpha=1 - level, method="wilson")
    share = correct / n  # rounding can put an end a hair past the share itself (at 0 or n) or outside [0, 1]
    return max(0.0, min(float(low), share)), min(1.0, max(float(high), share))


def seed_interval(
    values: Sequence[float], level: float = LEVEL, bounds: tuple[float, float] | None = None
) -> tuple[float, float] | None:
    """Student's t interval for the mean of ``values`` (one per seed), cut to ``bounds`` (an accuracy's [0,
    1]); None with fewer than two."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    sem = statistics.stdev(values) / len(values) ** 0.5
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return float(low), float(high)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test on paired outcomes (booleans, one per image): (images only A got right, images
    only B got right, two-sided p-value)."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    table = [[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]]
    return only_a, only_b, float(mcnemar(table, exact=True).pvalue)


def holm(p_values: Sequence[float], level: float = LEVEL) -> list[float]:
    """Holm-adjusted p-values for a family of tests (compare each with 1 - level)."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), alpha=1 - level, method="holm")[1]]


@dataclass
class PairedTest:
    """Models ``a`` and ``b`` on the same ``n`` test images of one seed's runs."""

    a: str
    b: str
    seed: int | None
    n: int
    correct_a: int
    correct_b: int
    only_a: int  # images only a got right
    only_b: int
    p: float
    p_holm: float | None = None

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < 1 - LEVEL

    def reading(self) -> str:
        """The test in plain words."""
        diff = self.correct_a - self.correct_b
        if diff == 0:
            lead = f"{self.a} vs {self.b}: the same number right out of {self.n:,}"
        else:
            ahead, behind = (self.a, self.b) if diff > 0 else (self.b, self.a)
            lead = f"{ahead} vs {behind}: {abs(diff)} more correct out of {self.n:,}"
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{lead} ({self.a} alone right on {self.only_a}, {self.b} alone on {self.only_b}), "
            f"p {_p(self.p)}, Holm-adjusted {_p(self.p_holm)}: {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant, "reading": self.reading()}


def _p(p: float | None) -> str:
    """ "= 0.41", "< 0.001"."""
    if p is None:
        return "—"
    return f"= {p:.2g}" if p >= 0.001 else "< 0.001"


def load_correct(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(index, target, whether each test image was predicted right) from a run's predictions, or None."""
    from mnist_bench.callbacks.predictions import PREDICTIONS_FILE, read_predictions

    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        record = read_predictions(path)
        return record["index"], record["target"], record["pred"] == record["target"]
    except (OSError, ValueError, KeyError):
        return None


def paired_tests(rows: Sequence[dict[str, Any]]) -> tuple[list[PairedTest], list[str]]:
    """McNemar's exact test for every pair of models, on each seed both ran (ok runs with per-image
    predictions, on the test images both scored, with the same labels), Holm-corrected over the whole family.
    Returns the tests and what could not be compared, in words."""
    runs: dict[tuple[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    skipped: list[str] = []
    models: list[str] = []
    for row in rows:
        if row.get("status") != "ok" or not row.get("run_dir"):
            continue
        loaded = load_correct(row["run_dir"])
        if loaded is None:
            skipped.append(
                f"{row['model']} (seed {row.get('seed')}): no per-image predictions in {row['run_dir']}"
            )
            continue
        runs[(row["model"], row.get("seed"))] = loaded
        if row["model"] not in models:
            models.append(row["model"])
    tests: list[PairedTest] = []
    for a, b in itertools.combinations(models, 2):
        seeds = [s for (m, s) in runs if m == a and (b, s) in runs]
        for seed in seeds:
            (index_a, target_a, right_a), (index_b, target_b, right_b) = runs[(a, seed)], runs[(b, seed)]
            common, at_a, at_b = np.intersect1d(index_a, index_b, return_indices=True)
            if not len(common) or not np.array_equal(target_a[at_a], target_b[at_b]):
                skipped.append(f"{a} vs {b} (seed {seed}): not scored on the same test images")
                continue
            only_a, only_b, p = mcnemar_exact(right_a[at_a], right_b[at_b])
            tests.append(
                PairedTest(
                    a,
                    b,
                    seed,
                    len(common),
                    int(right_a[at_a].sum()),
                    int(right_b[at_b].sum()),
                    only_a,
                    only_b,
                    p,
                )
            )
    for test, adjusted in zip(tests, holm([t.p for t in tests]), strict=True):
        test.p_holm = adjusted
    return tests, skipped
