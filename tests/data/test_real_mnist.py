"""Real MNIST runs (marked slow; `make test` runs them after `make data`)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_bench.cli import main

from ..conftest import REAL_DATA, ROOT, real_data_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not real_data_available(), reason="real MNIST missing: run `make data`"),
]


def test_real_mnist_is_the_official_one():
    from mnist_bench.data.idx import verify_official

    verify_official(REAL_DATA)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> Path:
    """A real 1-epoch CNN run on MNIST; its run dir."""
    root = tmp_path_factory.mktemp("real_cnn")
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/cnn.yaml"),
            f"--data.data_dir={REAL_DATA}",
            "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    (run,) = (root / "lightning_logs" / "cnn").glob("version_*")
    return run


def test_cnn_one_epoch_on_real_mnist(cnn_run):
    m = json.loads((cnn_run / "metrics.json").read_text())
    assert m["status"] == "ok"
    assert m["test/acc"] >= 0.985, m["test/acc"]
    assert m["test/official"] is True, "the published t10k files"


def test_test_digits_saved_as_images_round_trip_through_predict(cnn_run, tmp_path):
    """MNIST test digits saved as PNG (as they are; and dark on white, 4× larger, RGB, in a wide margin) and
    read back by `mnist-bench predict` get the class the model gives the original tensors."""
    from torchvision.datasets import MNIST

    from mnist_bench.data.datasets import MNIST as MNIST_SPEC

    normalize = MNIST_SPEC.info.normalize
    from mnist_bench.inference.checkpoints import class_probabilities, load_trained
    from mnist_bench.inference.predict import main as predict_main

    n = 60
    test = MNIST(str(REAL_DATA), train=False)
    model = load_trained(cnn_run)
    expected = class_probabilities(model, normalize(test.data[:n, None])).argmax(dim=1).tolist()
    for i in range(n):
        digit = test.data[i].numpy()
        Image.fromarray(digit).save(tmp_path / f"{i:03d}_plain.png")
        paper = Image.fromarray(np.pad(255 - digit, 30, constant_values=255)).resize(
            (352, 352), Image.BICUBIC
        )
        paper.convert("RGB").save(tmp_path / f"{i:03d}_paper.png")
    out = tmp_path / "rows.csv"
    assert predict_main([str(tmp_path), "--ckpt_path", str(cnn_run), "--csv", str(out)]) == 0
    rows = {Path(r["file"]).name: int(r["digit"]) for r in csv.DictReader(out.open())}
    plain = [rows[f"{i:03d}_plain.png"] for i in range(n)]
    paper = [rows[f"{i:03d}_paper.png"] for i in range(n)]
    assert plain == expected
    assert sum(p == e for p, e in zip(paper, expected, strict=True)) >= n - 1


def test_photographed_test_digits_score_close_to_their_clean_scans(cnn_run, tmp_path):
    """100 MNIST test digits, each as a clean scan (dark on white) and as a photograph (uneven light, grey
    paper and pencil, noise, tilt, JPEG at 30-90): the photographs' accuracy is within 5 points of the
    scans'."""
    from torchvision.datasets import MNIST

    from mnist_bench.inference.predict import main as predict_main

    from ..photos import photograph

    n = 100
    test = MNIST(str(REAL_DATA), train=False)
    rng = np.random.default_rng(0)
    for i in range(n):
        ink = test.data[i].numpy() / 255
        clean = Image.fromarray(np.pad(255 - test.data[i].numpy(), 20, constant_values=255)).resize(
            (272, 272)
        )
        clean.save(tmp_path / f"{i:03d}_clean.png")
        photograph(ink, rng, quality=(30, 60, 90)[i % 3]).save(tmp_path / f"{i:03d}_photo.jpg")
    out = tmp_path / "rows.csv"
    assert predict_main([str(tmp_path), "--ckpt_path", str(cnn_run), "--csv", str(out)]) == 0
    rows = {Path(r["file"]).name: int(r["digit"]) for r in csv.DictReader(out.open())}
    truth = test.targets[:n].tolist()
    clean = sum(rows[f"{i:03d}_clean.png"] == truth[i] for i in range(n))
    photo = sum(rows[f"{i:03d}_photo.jpg"] == truth[i] for i in range(n))
    assert clean >= 95 and photo >= clean - 5, (clean, photo)


def test_handwriting_fonts_are_read_through_predict_as_scans_and_photographs(cnn_run, tmp_path):
    """Digits that are not MNIST's: the font set (every width, fill and paper, two of each kind) saved as PNG
    scans and JPEG photographs and read by `mnist-bench predict` with the 1-epoch CNN."""
    from .. import handwriting
    from ..photos import photograph

    if not handwriting.font_files():
        pytest.skip(handwriting.FONTS_MISSING)
    from mnist_bench.inference.predict import main as predict_main

    rng = np.random.default_rng(0)
    truth = {}
    for i, s in enumerate(handwriting.font_set(per_kind=2, seed=1)):
        Image.fromarray(np.rint(s.image * 255).astype(np.uint8)).save(tmp_path / f"{i:03d}_scan.png")
        photograph(1.0 - s.image, rng, quality=(30, 60, 90)[i % 3]).save(tmp_path / f"{i:03d}_photo.jpg")
        truth[f"{i:03d}_scan.png"] = truth[f"{i:03d}_photo.jpg"] = s.digit
    out = tmp_path / "rows.csv"
    predict_main([str(tmp_path), "--ckpt_path", str(cnn_run), "--csv", str(out)])
    rows = {Path(r["file"]).name: r["digit"] for r in csv.DictReader(out.open())}
    scans = np.mean([rows[name] == str(d) for name, d in truth.items() if name.endswith("scan.png")])
    photos = np.mean([rows[name] == str(d) for name, d in truth.items() if name.endswith("photo.jpg")])
    print(f"font set through predict, 1-epoch CNN: scans {scans:.1%}, photographs {photos:.1%}")
    assert scans >= 0.93 and photos >= 0.85, (scans, photos)


def test_rows_of_digits_are_read_as_numbers(cnn_run, tmp_path):
    """`predict --number` on rows of 4 digits, some touching: from MNIST test digits and from the fonts, saved
    as PNG scans; the whole string must be right for most rows."""
    from torchvision.datasets import MNIST

    from mnist_bench.inference.predict import main as predict_main

    from .. import handwriting

    test = MNIST(str(REAL_DATA), train=False)
    rows = {
        f"mnist_{k:02d}.png": row
        for k, row in enumerate(
            handwriting.mnist_rows(test.data.numpy(), test.targets.numpy(), 4, 20, seed=3)
        )
    }
    if handwriting.font_files():
        rows |= {f"fonts_{k:02d}.png": row for k, row in enumerate(handwriting.font_rows(4, 20, seed=3))}
    for name, (_, gray) in rows.items():
        Image.fromarray(np.rint(gray * 255).astype(np.uint8)).save(tmp_path / name)
    out = tmp_path / "rows.csv"
    predict_main([str(tmp_path), "--ckpt_path", str(cnn_run), "--number", "--csv", str(out)])
    read = {Path(r["file"]).name: r["number"] for r in csv.DictReader(out.open())}
    exact = {
        source: np.mean([read[n] == truth for n, (truth, _) in rows.items() if n.startswith(source)])
        for source in ("mnist", "fonts")
        if any(n.startswith(source) for n in rows)
    }
    print(f"4-digit rows read exactly, 1-epoch CNN: {exact}")
    assert exact["mnist"] >= 0.7 and exact.get("fonts", 1.0) >= 0.6, exact
