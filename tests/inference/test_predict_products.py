"""`mnist-bench predict` for a dataset of product photos (Fashion-MNIST): a user's photo is framed as Zalando
framed its garments (trimmed to the object, longer side 28 px, centred by its box, negated), not as an MNIST
digit."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_bench.data.datasets import FASHION_MNIST, FRAMINGS, DatasetInfo
from mnist_bench.errors import ConfigError
from mnist_bench.inference.export import metadata
from mnist_bench.inference.images import FRAMING_STEPS, ImageError, load_digit, load_image, load_product
from mnist_bench.inference.predict import main as predict_main
from mnist_bench.models import CNN


def garment(dark_on_light: bool = True, background: int = 255) -> np.ndarray:
    """A 'trouser' photographed off-centre on a large plain canvas (uint8): two legs joined at the waist,
    240 px tall and 120 px wide, with a shaded fabric texture."""
    rng = np.random.default_rng(0)
    obj = np.zeros((240, 120))
    obj[:40, :] = 1.0  # waist
    obj[40:, :50] = 1.0  # legs
    obj[40:, 70:] = 1.0
    shade = 0.6 + 0.4 * np.linspace(0, 1, 120)[None, :] * (0.9 + 0.1 * rng.random((240, 120)))
    obj *= shade  # 0 = empty, up to 1 = the object's strongest
    canvas = np.zeros((400, 360))
    canvas[60:300, 200:320] = obj
    if dark_on_light:  # a dark garment on a light background, as product photos are
        return np.rint(background - canvas * (background - 20)).astype(np.uint8)
    return np.rint(canvas * 235).astype(np.uint8)


def test_a_product_photo_is_trimmed_scaled_to_28px_centred_by_its_box_and_negated(tmp_path):
    path = tmp_path / "trouser.png"
    Image.fromarray(garment()).save(path)
    image = load_product(path)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image[:, 0].max() == 0 and image[:, -1].max() == 0, "the background is black after negation"
    rows, cols = np.nonzero(image > 0.3)
    assert rows.min() == 0 and rows.max() == 27, "the longer side (the 240-px height) fills the 28 px"
    assert cols.max() - cols.min() + 1 == pytest.approx(28 * 120 / 240, abs=1), "aspect ratio kept"
    assert abs(cols.min() - (27 - cols.max())) <= 1, "centred by its box"
    gap = (cols.min() + cols.max() + 1) // 2  # the middle of the box: between the legs, below the waist
    assert image[20, gap] < 0.2 < 0.5 < image[2, gap], "the gap between the legs stays dark, the waist bright"
    assert image[20, cols.max()] > image[20, cols.min()], (
        "the shading survives: the lighter side is the brighter"
    )


def test_the_background_need_not_be_white_and_light_objects_on_black_are_kept(tmp_path):
    Image.fromarray(garment()).save(tmp_path / "white.png")
    Image.fromarray(garment(background=200)).save(tmp_path / "grey.png")
    Image.fromarray(garment(dark_on_light=False)).save(tmp_path / "black.png")
    Image.fromarray(garment()).convert("RGB").save(tmp_path / "photo.jpg", quality=90)
    white = load_product(tmp_path / "white.png")
    assert np.abs(load_product(tmp_path / "grey.png") - white).mean() < 0.03, (
        "a grey background goes to black too"
    )
    assert np.abs(load_product(tmp_path / "black.png") - white).max() < 1e-3
    assert np.abs(load_product(tmp_path / "photo.jpg") - white).mean() < 0.02


def test_a_photo_framed_as_a_digit_is_not_what_fashion_models_saw(tmp_path):
    path = tmp_path / "trouser.png"
    Image.fromarray(garment()).save(path)
    as_digit, as_product = load_image(path, "digit"), load_image(path, "product")
    rows = np.nonzero(as_digit.max(axis=1) > 0.3)[0]
    assert rows.max() - rows.min() + 1 == 20, "the digit framing scales to MNIST's 20-px box"
    assert not np.allclose(as_digit, as_product, atol=0.1)
    with pytest.raises(ValueError, match="unknown framing"):
        load_image(path, "poster")


def test_a_plain_image_has_no_object(tmp_path):
    Image.new("L", (64, 64), 240).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="no object found"):
        load_product(tmp_path / "blank.png")


def test_the_framing_belongs_to_the_dataset_and_old_checkpoints_get_their_dataset_s():
    assert FASHION_MNIST.info.framing == "product"
    assert set(FRAMING_STEPS) == set(FRAMINGS), "every framing is described for the ONNX metadata"
    described = metadata(CNN(dataset=FASHION_MNIST.info.as_dict()), "x.ckpt")["mnist_bench.preprocessing"]
    assert described == FRAMING_STEPS["product"]
    stored = FASHION_MNIST.info.as_dict()
    assert DatasetInfo.from_dict(stored) == FASHION_MNIST.info
    del stored["framing"]  # a checkpoint saved before the info had a framing
    assert DatasetInfo.from_dict(stored).framing == "product"
    assert DatasetInfo.from_dict({**stored, "name": "my_glyphs"}).framing == "digit"
    with pytest.raises(ConfigError, match="framing 'poster' is unknown"):
        DatasetInfo("x", ("a", "b"), 0.5, 0.5, framing="poster")


def test_predict_with_a_fashion_model_frames_the_photo_as_a_garment(tmp_path):
    torch.manual_seed(0)
    model = CNN(dataset=FASHION_MNIST.info.as_dict())
    ckpt = tmp_path / "fashion.ckpt"
    hparams = {k: v for k, v in model.hparams.items() if k not in ("optimizer", "scheduler")}
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {"_class_path": "mnist_bench.models.CNN", **hparams},
        },
        ckpt,
    )
    Image.fromarray(garment()).save(tmp_path / "trouser.png")
    out = tmp_path / "seen"
    table = tmp_path / "rows.csv"
    assert (
        predict_main(
            [
                str(tmp_path / "trouser.png"),
                "--ckpt_path",
                str(ckpt),
                "--save_prepared",
                str(out),
                "--csv",
                str(table),
            ]
        )
        == 0
    )
    seen = np.asarray(Image.open(out / "trouser.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(seen, load_product(tmp_path / "trouser.png"), atol=1 / 255 + 1e-6)
    assert not np.allclose(seen, load_digit(tmp_path / "trouser.png"), atol=0.1)
    (row,) = list(csv.DictReader(table.open()))
    assert row["class"] in FASHION_MNIST.info.class_names, "the column says class, not digit, for garments"


def test_an_object_lighter_than_a_light_background_or_darker_than_a_dark_one_is_kept(tmp_path):
    reference = load_product(_saved(tmp_path, "white.png", garment()))
    obj = (255 - garment()).astype(np.float64) / 235  # 0 = background, up to 1 = the object's strongest
    light_on_light = np.rint(170 + obj * 80).astype(np.uint8)  # a pale garment on light grey paper
    dark_on_dark = np.rint(115 - obj * 100).astype(np.uint8)  # a dark garment on dark grey
    for name, photo in (("pale.png", light_on_light), ("dark.png", dark_on_dark)):
        framed = load_product(_saved(tmp_path, name, photo))
        assert framed.max() > 0.9, f"{name}: the garment is not erased"
        assert np.corrcoef(framed.ravel(), reference.ravel())[0, 1] > 0.95, name


def test_a_speck_far_from_the_garment_does_not_move_the_frame(tmp_path):
    clean = load_product(_saved(tmp_path, "clean.png", garment()))
    specked = garment()
    specked[5:9, 5:9] = 120  # a grey speck in the corner of the photo
    np.testing.assert_allclose(load_product(_saved(tmp_path, "specked.png", specked)), clean, atol=1e-6)


def test_the_column_says_digit_only_for_the_ten_digits():
    from mnist_bench.data.datasets import KMNIST, MNIST
    from mnist_bench.inference.predict import class_column

    assert class_column(MNIST.info.class_names) == "digit"
    assert class_column(KMNIST.info.class_names) == "class", "KMNIST's classes are characters, not digits"
    assert class_column(FASHION_MNIST.info.class_names) == "class"


def _saved(tmp_path, name: str, pixels: np.ndarray):
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return path
