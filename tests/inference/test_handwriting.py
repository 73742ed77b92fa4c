"""Predict's preparation on digits that are not MNIST's: bold strokes, handwriting fonts, every fill and
paper."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_bench.inference import images

from .. import handwriting

needs_fonts = pytest.mark.skipif(not handwriting.font_files(), reason=handwriting.FONTS_MISSING)


def ink_overlap(gray: np.ndarray, ink: np.ndarray, prepare=images) -> float:
    """How well the prepared image's ink matches the ink framed directly (the ideal preparation), in the worse
    of two directions: the share of the ideal ink that the prepared ink covers, and the share of the prepared
    ink on the ideal ink, each within 1 px (a thin stroke one pixel aside still matches)."""
    from scipy.ndimage import binary_dilation

    prepared = prepare.mnist_digit(prepare.light_ink_on_dark(gray)) > 0.3
    ideal = images.mnist_digit(ink) > 0.3
    covered = (ideal & binary_dilation(prepared)).sum() / ideal.sum()
    on_ink = (prepared & binary_dilation(ideal)).sum() / max(1, prepared.sum())
    return float(min(covered, on_ink))


def drawn(shape: str, width: int, size: int = 256) -> np.ndarray:
    """A bold stroke drawn with Pillow (light on black): a ring (a zero), a bar (a one) or a seven."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "ring":
        draw.ellipse((40, 20, size - 40, size - 20), outline=255, width=width)
    elif shape == "bar":
        draw.line((size // 2, 20, size // 2, size - 20), fill=255, width=width)
    else:
        draw.line((40, 30, size - 40, 30, size // 2 - 10, size - 20), fill=255, width=width, joint="curve")
    return np.asarray(canvas, dtype=np.float64) / 255


@pytest.mark.parametrize("shape", ["ring", "bar", "seven"])
@pytest.mark.parametrize("width", [12, 40, 70])
def test_a_bold_stroke_keeps_its_middle(shape, width):
    """Dark marker on white paper, 12 to 70 px wide at 256 px: the prepared digit is the stroke framed, not
    its outline (the old background disk, 26 px across, took the middle of strokes wider than it for
    paper)."""
    ink = drawn(shape, width)
    scan = 0.95 - 0.85 * ink
    assert ink_overlap(scan, ink) > 0.85


def test_the_stroke_width_is_measured_on_the_ink():
    for width in (10, 30, 60):
        measured = images.stroke_width(drawn("bar", width))
        assert width * 0.8 <= measured <= width * 1.25, (width, measured)
    assert images.stroke_width(np.zeros((64, 64))) == 0.0


@needs_fonts
def test_every_handwriting_font_digit_keeps_its_ink_from_pen_to_fat_marker():
    """Each font's digits at each width, 80% of the frame on squared paper: the prepared ink overlaps the ink
    framed directly, and the dark ink is told from the paper."""
    rng = np.random.default_rng(0)
    worst = []
    for font in handwriting.font_files():
        for digit in (0, 4, 8):
            for radius in handwriting.WIDTHS.values():
                ink = handwriting.thicken(handwriting.glyph(font, digit), radius)
                scan = handwriting.scan(ink, 0.8, "squared", rng)
                assert images.dark_ink(images._working_size(scan)), (font.name, digit, radius)
                worst.append((ink_overlap(scan, ink), font.name, digit, radius))
    assert min(worst)[0] > 0.75, min(worst)
    assert np.mean([w[0] for w in worst]) > 0.9


@needs_fonts
def test_the_font_set_covers_every_kind():
    samples = handwriting.font_set(per_kind=1)
    kinds = {(s.width, s.fill, s.paper) for s in samples}
    assert len(kinds) == len(handwriting.WIDTHS) * len(handwriting.FILLS) * len(handwriting.PAPERS)
    assert all(
        s.image.shape == handwriting.FRAME and 0 <= s.image.min() and s.image.max() <= 1 for s in samples
    )


@pytest.mark.parametrize("shape", ["ring", "seven"])
def test_paper_photographed_on_a_dark_desk_is_cropped_to_the_paper(shape):
    """A sheet of paper on a darker desk: the paper, not the frame's border, is the background (the border
    rule alone took the paper for light ink on a dark ground)."""
    ink = drawn(shape, 14, size=180)
    photo = np.full((240, 240), 0.25)
    photo[20:220, 25:215] = 0.93
    photo[30:210, 30:210] -= 0.8 * ink
    assert images.paper_on_a_desk(photo) is not None
    assert ink_overlap(photo, ink) > 0.85


def test_a_light_digit_on_a_dark_ground_is_not_taken_for_paper():
    ink = drawn("ring", 14)
    assert images.paper_on_a_desk(0.05 + 0.9 * ink) is None
    assert ink_overlap(0.05 + 0.9 * ink, ink) > 0.85
