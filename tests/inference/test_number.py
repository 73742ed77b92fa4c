"""`predict --number`: a row of digits cut into its digits, left to right, and read as a string."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_bench.data.datasets import FASHION_MNIST
from mnist_bench.inference.number import segment
from mnist_bench.inference.predict import main as predict_main
from mnist_bench.models import CNN

from .. import handwriting


def strokes(shapes: list[str], gap: int, height: int = 120, width: int = 14) -> np.ndarray:
    """A row of hand-drawn shapes (ring: a zero, bar: a one, seven), ``gap`` px apart (negative: overlapping),
    dark on white."""
    w = int(0.7 * height)
    canvas = Image.new("L", (60 + len(shapes) * (w + gap) + 60, height + 80), 245)
    draw = ImageDraw.Draw(canvas)
    x = 60
    for shape in shapes:
        if shape == "ring":
            draw.ellipse((x, 40, x + w, 40 + height), outline=20, width=width)
        elif shape == "bar":
            draw.line((x + w // 2, 40, x + w // 2, 40 + height), fill=20, width=width)
        else:
            draw.line((x, 40, x + w, 40, x + w // 3, 40 + height), fill=20, width=width)
        x += w + gap
    return np.asarray(canvas, dtype=np.float64) / 255


def test_separate_digits_are_found_left_to_right():
    digits = segment(strokes(["bar", "ring", "seven", "ring", "bar"], gap=30))
    assert len(digits) == 5
    assert all(a.right <= b.left for a, b in zip(digits, digits[1:], strict=False)), "left to right, apart"
    assert all(d.image.shape == (28, 28) and d.image.max() == pytest.approx(1, abs=0.05) for d in digits)
    widths = [d.right - d.left for d in digits]
    assert widths[0] < widths[1] / 3, "the bar's box is narrow, the ring's wide"


def test_touching_digits_are_cut_where_they_meet():
    """Three rings that overlap are one component; it is cut into three near where they meet (where the walls
    of two rings make one run of ink), not inside a ring, where the ink is thinnest."""
    image = strokes(["ring", "ring", "ring"], gap=-10)
    digits = segment(image)
    assert len(digits) == 3
    joins = [digits[k].right for k in range(2)]
    ring = (len(image[0]) - 120) / 3  # the row's width less its margins, per ring (in the image's own px)
    scale = min(1.0, 256 / min(image.shape))
    for k, cut in enumerate(joins):
        assert abs(cut - (60 + (k + 1) * ring) * scale) < 0.15 * ring * scale, (k, cut)


def test_a_piece_of_a_digit_joins_its_digit_and_a_stray_speck_is_dropped():
    image = strokes(["seven", "bar"], gap=40)
    image[60:64, 20:26] = 0.1  # a speck well left of the row
    image[40:52, 218:245] = 0.1  # a low piece (a crossbar) right beside the bar
    digits = segment(image)
    assert len(digits) == 2


@pytest.mark.skipif(not handwriting.font_files(), reason=handwriting.FONTS_MISSING)
@pytest.mark.parametrize("length", [2, 5, 8])
def test_font_rows_are_cut_into_as_many_digits_as_they_hold(length):
    """Rows in the handwriting fonts, no digits touching: every row is cut into its digits (by the ink
    alone)."""
    rows = handwriting.font_rows(length, 6, seed=length, touching=0.0)
    counts = [len(segment(image)) for _, image in rows]
    assert counts == [length] * len(rows)


@pytest.fixture
def checkpoint(tmp_path):
    def make(dataset=None) -> str:
        torch.manual_seed(0)
        model = CNN(dataset=dataset) if dataset else CNN()
        path = tmp_path / "model.ckpt"
        hparams = {k: v for k, v in model.hparams.items() if k not in ("optimizer", "scheduler")}
        torch.save(
            {
                "state_dict": model.state_dict(),
                "hyper_parameters": {"_class_path": "mnist_bench.models.CNN", **hparams},
            },
            path,
        )
        return str(path)

    return make


def test_predict_number_gives_a_string_with_each_digits_confidence_and_boxes(checkpoint, tmp_path, capsys):
    Image.fromarray(np.rint(strokes(["bar", "ring", "ring", "seven"], gap=25) * 255).astype(np.uint8)).save(
        tmp_path / "row.png"
    )
    out, sheet, seen = tmp_path / "rows.csv", tmp_path / "sheet.png", tmp_path / "seen"
    assert (
        predict_main(
            [
                str(tmp_path / "row.png"),
                "--ckpt_path",
                checkpoint(),
                "--number",
                "--csv",
                str(out),
                "--sheet",
                str(sheet),
                "--save_prepared",
                str(seen),
            ]
        )
        == 0
    )
    (row,) = list(csv.DictReader(out.open()))
    assert len(row["number"]) == 4 and row["number"].isdigit()
    per_digit = [item.split(":") for item in row["digit_confidences"].split()]
    assert [d for d, _ in per_digit] == list(row["number"])
    assert float(row["confidence"]) == pytest.approx(min(float(p) for _, p in per_digit), abs=1e-3)
    assert Image.open(seen / "row.png").size == (4 * 28, 28), "the four digits as the model saw them"
    from mnist_bench.inference.sheet import BOX_COLOUR

    picture = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    assert (np.abs(picture - np.array(BOX_COLOUR)).sum(-1) < 40).sum() > 50, (
        "the boxes are drawn on the sheet"
    )


def test_number_with_a_model_of_other_classes_is_one_line(checkpoint, tmp_path, capsys):
    Image.fromarray(np.rint(strokes(["bar", "ring"], gap=25) * 255).astype(np.uint8)).save(
        tmp_path / "row.png"
    )
    assert (
        predict_main(
            [str(tmp_path / "row.png"), "--ckpt_path", checkpoint(FASHION_MNIST.info.as_dict()), "--number"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--number" in err[0] and "Fix:" in err[0]
    assert Path(tmp_path / "row.png").exists()


def test_a_digit_box_wider_than_a_digit_makes_the_number_uncertain():
    from mnist_bench.inference.number import DigitBox, too_wide

    blank = np.zeros((28, 28))
    assert not too_wide([DigitBox(0, 60, 0, 100, blank), DigitBox(70, 150, 0, 100, blank)])
    assert too_wide([DigitBox(0, 60, 0, 100, blank), DigitBox(70, 200, 0, 100, blank)])
    assert not too_wide([])


def test_boxes_are_shares_of_the_whole_photo_when_the_paper_lies_on_a_desk():
    """A row on a sheet of paper photographed on a darker desk is read from the paper alone; each digit's box
    is still given as shares of the whole photo, where the sheet draws it."""
    row = strokes(["bar", "ring", "seven"], gap=30)
    h, w = row.shape
    top, left = 50, 70
    photo = np.full((h + 90, w + 130), 0.25)
    photo[top : top + h, left : left + w] = row
    on_paper, on_desk = segment(row), segment(photo)
    assert len(on_paper) == len(on_desk) == 3
    for alone, placed in zip(on_paper, on_desk, strict=True):
        # the box in the photo's pixels, against the same digit's box in the row's pixels moved by the offset
        got = np.multiply(placed.share, [photo.shape[1], photo.shape[0]] * 2)
        want = np.multiply(alone.share, [w, h] * 2) + [left, top, left, top]
        assert np.abs(got - want).max() < 0.03 * w, (got, want)
