"""A handwritten number (a row of digits: a year, a phone number) cut into its digits, left to right.

The ink is found as for one digit (``images.ink_in_window``, at the scale of the row's height). Its
connected components are the digits, after two repairs: pieces of one digit (a 5's flag, a broken stroke) that
lie above one another are merged, and a component much wider than a digit (two or more digits that touch) is
split at the column that crosses the fewest strokes near each expected cut. Each digit is then framed as MNIST
frames one (``images.mnist_digit``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mnist_bench.inference.images import INK_LEVEL, ImageError, ink_in_window, mnist_digit

# components whose columns overlap by this share of the narrower one, and whose rows overlap by less than this
# share of the lower one, lie above one another: pieces of one digit
MERGE_OVERLAP = 0.5
# a component wider than WIDE times the digits' median height holds touching digits: round(width /
# (DIGIT_WIDTH times the height)) of them (a single wide 0 or 2 is up to about 1.2 heights wide; two touching
# about 1.6 and more)
WIDE = 1.4
DIGIT_WIDTH = 0.75
# with a model: a component at least MAY_HOLD_TWO heights wide is read whole and cut in parts at least
# MIN_PART heights wide; a cut must read better than the whole by SPLIT_MARGIN in mean log confidence
MAY_HOLD_TWO = 0.8
MIN_PART = 0.35
SPLIT_MARGIN = 0.05
UNSURE_WIDTH = 1.2  # a digit kept whole though wider than this many heights makes the number uncertain
SINGLE_WIDTH, WIDE_PENALTY = (
    1.3,
    2.0,
)  # a part wider than 1.3 heights loses 2 in log confidence per height over
LOW_PIECE = 0.6  # a piece lower than this share of the digits' median height is part of its neighbour


@dataclass
class DigitBox:
    """One digit of the row: its columns and rows in the prepared ink, its 28x28 framing, and its box as
    shares of the whole image (left, top, right, bottom), where a sheet draws it."""

    left: int
    right: int  # exclusive
    top: int
    bottom: int  # exclusive
    image: np.ndarray
    share: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


def _column_spans(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(left, right, top, bottom) of each digit's ink: the connected components, merged where one lies above
    another, and a low piece (a 4's crossbar, a 5's flag, a broken stroke) joined to its nearest neighbour."""
    from skimage.measure import label, regionprops

    parts = [r.bbox for r in regionprops(label(ink > INK_LEVEL, connectivity=2))]
    boxes = sorted([left, right, top, bottom] for top, left, bottom, right in parts)
    merged: list[list[int]] = []
    for box in boxes:
        if merged:
            last = merged[-1]
            overlap = min(last[1], box[1]) - max(last[0], box[0])
            beside = min(last[3], box[3]) - max(
                last[2], box[2]
            )  # rows shared: digits side by side share most
            if overlap > MERGE_OVERLAP * min(
                last[1] - last[0], box[1] - box[0]
            ) and beside < MERGE_OVERLAP * min(last[3] - last[2], box[3] - box[2]):
                merged[-1] = _union(last, box)
                continue
        merged.append(box)
    if not merged:
        return []
    height = float(np.median([b[3] - b[2] for b in merged]))
    while len(merged) > 1:
        low = [k for k, b in enumerate(merged) if b[3] - b[2] < LOW_PIECE * height]
        if not low:
            break
        k = min(low, key=lambda i: merged[i][3] - merged[i][2])
        gap = {
            j: max(merged[j][0] - merged[k][1], merged[k][0] - merged[j][1])
            for j in (k - 1, k + 1)
            if 0 <= j < len(merged)
        }
        j = min(gap, key=gap.get)
        if gap[j] > LOW_PIECE * height:  # far from every digit: a speck or a stray mark
            del merged[k]
            continue
        merged[min(j, k)] = _union(merged[j], merged[k])
        del merged[max(j, k)]
    return [tuple(b) for b in merged]


def _union(a: list[int], b: list[int]) -> list[int]:
    return [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])]


def _split(ink: np.ndarray, box: tuple[int, int, int, int], width: float) -> list[tuple[int, int, int, int]]:
    """A component of touching digits cut into round(its width / a digit's width) parts. Each cut is the
    column, within a third of a digit's width of where an even cut would fall, that crosses the fewest strokes
    (runs of ink; where two round digits touch, their walls make one run), nearer the even cut on a tie."""
    left, right, top, bottom = box
    n = max(2, round((right - left) / width))
    mask = ink[top:bottom, left:right] > INK_LEVEL
    runs = (np.diff(mask.astype(np.int8), axis=0, prepend=0) == 1).sum(axis=0)
    ink_share = mask.mean(axis=0)  # of the column's height: a thin join costs less than a thick one
    cuts, step = [0], (right - left) / n
    for k in range(1, n):
        lo, hi = max(1, int(k * step - step / 3)), min(right - left - 1, int(k * step + step / 3) + 1)
        columns = np.arange(lo, hi)
        cost = runs[lo:hi] + 4 * ink_share[lo:hi] + 0.5 * np.abs(columns - k * step) / (step / 3)
        cuts.append(int(columns[np.argmin(cost)]))
    cuts.append(right - left)
    return [(left + a, left + b, top, bottom) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _framed(ink: np.ndarray, box: tuple[int, int, int, int]) -> DigitBox | None:
    left, right = box[0], box[1]
    piece = np.zeros_like(ink)
    piece[:, left:right] = ink[:, left:right]
    rows = np.nonzero((piece > INK_LEVEL).any(axis=1))[0]
    if len(rows) == 0:
        return None
    return DigitBox(left, right, int(rows.min()), int(rows.max()) + 1, mnist_digit(piece))


def segment(
    gray: np.ndarray, confidence: Callable[[list[np.ndarray]], np.ndarray] | None = None
) -> list[DigitBox]:
    """The digits of a row, left to right (``gray``: the image, 1 = white, any size). A component wide enough
    to hold touching digits is kept whole or cut in 2 to 4, whichever reads best: with ``confidence`` (the
    model's top probability for each 28x28 image), the cut whose digits' mean log confidence is highest, a cut
    needing a margin of SPLIT_MARGIN over the whole and parts wider than a digit penalised; without it, by
    width alone."""
    ink, window = ink_in_window(gray, row=True)
    spans = _column_spans(ink)
    if not spans:
        raise ImageError("no ink found")
    height = float(np.median([b[3] - b[2] for b in spans]))
    digits: list[DigitBox] = []
    for span in spans:
        width = span[1] - span[0]
        if confidence is None or width < MAY_HOLD_TWO * height:
            boxes = _split(ink, span, DIGIT_WIDTH * height) if width > WIDE * height else [span]
            digits += [d for d in (_framed(ink, b) for b in boxes) if d is not None]
            continue
        best, best_score = None, -np.inf
        for n in range(1, min(4, int(width // (MIN_PART * height))) + 1):
            parts = [
                d
                for d in (_framed(ink, b) for b in (_split(ink, span, width / n) if n > 1 else [span]))
                if d is not None
            ]
            score = float(np.mean(np.log(np.maximum(confidence([d.image for d in parts]), 1e-6))))
            if n > 1:
                score -= SPLIT_MARGIN
            # parts wider than a digit are unlikely (three digits squashed into 20 px read as a confident 4)
            score -= WIDE_PENALTY * max(0.0, width / (n * height) - SINGLE_WIDTH)
            if score > best_score:
                best, best_score = parts, score
        digits += best
    for d in digits:
        d.share = window.share((d.left, d.top, d.right, d.bottom), ink.shape)
    return digits


def too_wide(digits: list[DigitBox]) -> bool:
    """Whether a digit's box is wider than one digit can be (UNSURE_WIDTH times the digits' median height):
    two touching digits read as one confident digit (88 as an 8), so the number is marked uncertain."""
    if not digits:
        return False
    height = float(np.median([d.bottom - d.top for d in digits]))
    return any(d.right - d.left > UNSURE_WIDTH * height for d in digits)
