"""`mnist-bench predict`: the MNIST-style preprocessing of users' images, bad files, the rows and the exit
code."""

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_bench.inference.images import BOX, ImageError, load_digit
from mnist_bench.inference.predict import main as predict_main
from mnist_bench.models import CNN


def drawing(height: int = 300, width: int = 200, dark_on_light: bool = True) -> np.ndarray:
    """A 'digit': a thick L-shaped stroke, off-centre, on a large canvas (uint8, 255 = white)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    canvas[40:220, 30:60] = 255  # the upright, 180 px tall
    canvas[190:220, 30:130] = 255  # the foot, 100 px wide
    return 255 - canvas if dark_on_light else canvas


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return float((ys * img).sum() / img.sum()), float((xs * img).sum() / img.sum())


def save(tmp_path, name: str, img: Image.Image) -> str:
    path = tmp_path / name
    img.save(path)
    return str(path)


def test_dark_on_light_is_inverted_scaled_to_20px_and_centred_by_mass(tmp_path):
    digit = load_digit(save(tmp_path, "paper.png", Image.fromarray(drawing())))
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit[0].max() == 0 and digit[:, 0].max() == 0, "the background is black after inversion"
    assert digit.max() == pytest.approx(1.0, abs=0.02)
    rows, cols = np.nonzero(digit > 0.5)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert height == BOX, "the longer side (the 180-px upright) becomes 20 px"
    assert width == pytest.approx(BOX * 100 / 180, abs=1), "aspect ratio kept"
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5


def test_light_on_dark_is_not_inverted(tmp_path):
    paper = load_digit(save(tmp_path, "paper.png", Image.fromarray(drawing(dark_on_light=True))))
    screen = load_digit(save(tmp_path, "screen.png", Image.fromarray(drawing(dark_on_light=False))))
    np.testing.assert_allclose(paper, screen, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "RGBA-transparent", "P", "I;16", "JPEG", "BMP"])
def test_any_mode_gives_the_same_digit(mode, tmp_path):
    gray = drawing()
    reference = load_digit(save(tmp_path, "ref.png", Image.fromarray(gray)))
    if mode == "RGBA-transparent":
        ink = np.zeros((*gray.shape, 4), dtype=np.uint8)  # black ink, fully transparent background
        ink[..., 3] = 255 - gray
        img, name = Image.fromarray(ink, "RGBA"), "x.png"
    elif mode == "I;16":
        img, name = Image.fromarray(gray.astype(np.uint16) * 257), "x.png"  # 16-bit PNG
    elif mode == "JPEG":
        img, name = Image.fromarray(gray).convert("RGB"), "x.jpg"
    elif mode == "BMP":
        img, name = Image.fromarray(gray), "x.bmp"
    else:
        img, name = Image.fromarray(gray).convert(mode), "x.png"
    digit = load_digit(save(tmp_path, name, img))
    assert np.abs(digit - reference).max() < (0.1 if mode == "JPEG" else 1e-3)


def _huge_png(width: int, height: int) -> bytes:
    """A few hundred bytes that claim width × height pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def bad_files(tmp_path) -> dict[str, str]:
    good = tmp_path / "good.png"
    Image.fromarray(drawing()).save(good)
    files = {
        "text.png": b"this is not an image\n",
        "empty.png": b"",
        "truncated.png": good.read_bytes()[:200],
        "bomb.png": _huge_png(60_000, 60_000),
        "big.png": _huge_png(7_000, 7_000),
        "blank.png": None,
    }
    for name, data in files.items():
        if data is None:
            Image.new("L", (50, 50), 255).save(tmp_path / name)
        else:
            (tmp_path / name).write_bytes(data)
    return {
        "text.png": "not an image",
        "empty.png": "empty file",
        "truncated.png": "unreadable",
        "bomb.png": "decompression bomb",
        "big.png": "7000×7000 pixels is over",
        "blank.png": "no ink",
    }


def test_each_bad_file_has_its_reason(tmp_path):
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(ImageError, match=reason):
            load_digit(tmp_path / name)


@pytest.fixture
def cnn_checkpoint(tmp_path) -> str:
    torch.manual_seed(0)
    model = CNN()
    path = tmp_path / "cnn.ckpt"
    hparams = {k: v for k, v in model.hparams.items() if k not in ("optimizer", "scheduler")}
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {"_class_path": "mnist_bench.models.CNN", **hparams},
        },
        path,
    )
    return str(path)


def test_predict_rows_csv_and_exit_code(cnn_checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    reasons = bad_files(folder)
    Image.fromarray(drawing()).save(folder / "sub_good.jpg")
    (folder / "notes.txt").write_text("not picked up from a folder: not an image extension")
    out = tmp_path / "rows.csv"
    code = predict_main(
        [str(folder), str(tmp_path / "missing.png"), "--ckpt_path", cnn_checkpoint, "--csv", str(out)]
    )
    assert code == 1, "some files failed"
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {*reasons, "good.png", "sub_good.jpg", "missing.png"}
    for name in ("good.png", "sub_good.jpg"):
        assert rows[name]["error"] == "" and 0 <= int(rows[name]["digit"]) <= 9
        top3 = [item.split(":") for item in rows[name]["top3"].split()]
        assert len(top3) == 3 and int(top3[0][0]) == int(rows[name]["digit"])
        assert float(rows[name]["confidence"]) == pytest.approx(float(top3[0][1]), abs=1e-3)
    for name, reason in reasons.items():
        assert reason in rows[name]["error"] and rows[name]["digit"] == ""
    assert rows["missing.png"]["error"] == "no such file"
    assert predict_main([str(folder / "good.png"), "--ckpt_path", cnn_checkpoint]) == 0
    assert "good.png" in capsys.readouterr().out


def test_predict_refuses_a_bad_checkpoint_with_exit_2(tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "good.png")
    assert predict_main([str(tmp_path / "good.png"), "--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert "not found" in capsys.readouterr().err
    evil = tmp_path / "evil.ckpt"
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload()}}, evil)
    assert predict_main([str(tmp_path / "good.png"), "--ckpt_path", str(evil)]) == 2
    assert "refused" in capsys.readouterr().err and not marker.exists()


def test_an_image_pillow_opens_but_cannot_convert_is_an_error_row(cnn_checkpoint, tmp_path, capsys):
    lab = Image.fromarray(drawing()).convert("RGB").convert("LAB")
    lab.save(tmp_path / "lab.tif")
    Image.fromarray(drawing()).save(tmp_path / "good.png")
    out = tmp_path / "rows.csv"
    code = predict_main(
        [
            str(tmp_path / "lab.tif"),
            str(tmp_path / "good.png"),
            "--ckpt_path",
            cnn_checkpoint,
            "--csv",
            str(out),
        ]
    )
    assert code == 1
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert "LAB images are not supported" in rows["lab.tif"]["error"]
    assert rows["good.png"]["error"] == "" and rows["good.png"]["digit"] != ""


def test_a_nan_pixel_does_not_erase_the_digit(tmp_path):
    ink = drawing(dark_on_light=False).astype(np.float32) / 255.0
    clean = save(tmp_path, "clean.tif", Image.fromarray(ink, mode="F"))
    ink[0, 0] = np.nan
    ink[150, 100] = np.nan
    holed = save(tmp_path, "nan.tif", Image.fromarray(ink, mode="F"))
    np.testing.assert_allclose(load_digit(holed), load_digit(clean), atol=0.02)


@pytest.mark.parametrize("where", ["folder", "missing_parent"])
def test_an_unwritable_csv_is_refused_before_predicting(where, cnn_checkpoint, tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "good.png")
    target = tmp_path if where == "folder" else tmp_path / "no" / "such" / "rows.csv"
    assert (
        predict_main([str(tmp_path / "good.png"), "--ckpt_path", cnn_checkpoint, "--csv", str(target)]) == 2
    )
    captured = capsys.readouterr()
    assert captured.err.startswith(f"mnist-bench predict: cannot write --csv {target}")
    assert "good.png" not in captured.out, "nothing was predicted"


def test_a_checkpoint_whose_hyperparameters_do_not_fit_is_one_line(cnn_checkpoint, tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "good.png")
    ckpt = torch.load(cnn_checkpoint, weights_only=True)
    for name, change in (("extra", {"no_such_argument": 1}), ("list", {"hidden": [1, 2]})):
        bad = tmp_path / f"{name}.ckpt"
        torch.save({**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], **change}}, bad)
        assert predict_main([str(tmp_path / "good.png"), "--ckpt_path", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mnist-bench predict: {bad} does not fit CNN") and "Traceback" not in err


# --- photographs: uneven light, grey paper and pencil, noise, tilt, JPEG
# ---------------------------------------------
def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_a_photographed_digit_is_prepared_like_its_clean_scan(quality, tmp_path):
    from mnist_bench.data.synthetic import synthetic_digits

    from ..photos import photograph

    rng = np.random.default_rng(quality)
    images, _ = synthetic_digits(12, seed=quality)
    strokes = [np.where(img > 60, img, 0) / 255 for img in images]  # MNIST-like: a black field around the ink
    strokes.append(drawing(dark_on_light=False) / 255)
    for i, ink in enumerate(strokes):
        clean = save(tmp_path, f"clean{i}.png", Image.fromarray((255 - ink * 255).astype(np.uint8)))
        photo = save(tmp_path, f"photo{i}.png", photograph(ink, rng, quality=quality))
        similarity = _correlation(load_digit(photo), load_digit(clean))
        assert similarity > 0.8, (
            f"digit {i}: the prepared photo is unlike the prepared scan ({similarity:.2f})"
        )


def test_specks_beside_the_digit_are_dropped(tmp_path):
    page = drawing().copy()
    page[10:13, 150:153] = 0  # a dark speck far from the ink
    page[280:283, 10:13] = 0
    clean = load_digit(save(tmp_path, "clean.png", Image.fromarray(drawing())))
    specked = load_digit(save(tmp_path, "specks.png", Image.fromarray(page)))
    np.testing.assert_allclose(specked, clean, atol=1e-6)


def test_save_prepared_writes_what_the_model_saw(cnn_checkpoint, tmp_path):
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    out = tmp_path / "prepared"
    assert (
        predict_main(
            [str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--save_prepared", str(out)]
        )
        == 0
    )
    saved = np.asarray(Image.open(out / "seven.png"))
    assert saved.shape == (28, 28) and saved.dtype == np.uint8
    np.testing.assert_allclose(saved / 255, load_digit(tmp_path / "seven.png"), atol=1 / 255 + 1e-6)


def test_save_prepared_keeps_files_with_the_same_name_apart(cnn_checkpoint, tmp_path):
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    Image.fromarray(drawing()).save(tmp_path / "a" / "7.png")
    Image.fromarray(drawing()).save(tmp_path / "b" / "7.jpg")
    Image.fromarray(drawing()).save(tmp_path / "c" / "7-2.png")
    out = tmp_path / "prepared"
    assert (
        predict_main(
            [str(tmp_path / d) for d in "abc"] + ["--ckpt_path", cnn_checkpoint, "--save_prepared", str(out)]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["7-2-2.png", "7-2.png", "7.png"]
    blocked = tmp_path / "a" / "7.png"  # a file where the folder should go
    assert (
        predict_main([str(tmp_path / "b"), "--ckpt_path", cnn_checkpoint, "--save_prepared", str(blocked)])
        == 2
    )


# --- what predict writes: never over an input or a checkpoint, over another file only with --overwrite ---
def _err_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert "seven.png" not in captured.out, "refused before anything was predicted"
    return lines[0]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("how", ["same_folder", "relative", "symlinked_folder", "hardlink"])
def test_save_prepared_never_writes_over_an_input(
    how, overwrite, cnn_checkpoint, tmp_path, capsys, monkeypatch
):
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    before = (tmp_path / "seven.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    inputs, out = [str(tmp_path / "seven.png")], str(tmp_path)
    if how == "relative":
        inputs, out = ["./seven.png"], "."
    elif how == "symlinked_folder":
        (tmp_path / "link").symlink_to(tmp_path)
        out = str(tmp_path / "link")
    elif how == "hardlink":
        (tmp_path / "prepared").mkdir()
        (tmp_path / "prepared" / "seven.png").hardlink_to(tmp_path / "seven.png")
        out = str(tmp_path / "prepared")
    flags = ["--overwrite"] if overwrite else []
    assert predict_main([*inputs, "--ckpt_path", cnn_checkpoint, "--save_prepared", out, *flags]) == 2
    line = _err_line(capsys)
    assert line.startswith("mnist-bench predict: --save_prepared") and "seven.png" in line and "input" in line
    assert (tmp_path / "seven.png").read_bytes() == before


def test_an_existing_output_needs_overwrite(cnn_checkpoint, tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    rows, prepared = tmp_path / "rows.csv", tmp_path / "prepared"
    rows.write_text("mine\n")
    prepared.mkdir()
    (prepared / "seven.png").write_bytes(b"mine")
    args = [str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint]
    assert predict_main([*args, "--csv", str(rows)]) == 2
    line = _err_line(capsys)
    assert line.startswith(f"mnist-bench predict: --csv {rows} exists") and "--overwrite" in line
    assert predict_main([*args, "--save_prepared", str(prepared)]) == 2
    line = _err_line(capsys)
    assert line.startswith(f"mnist-bench predict: --save_prepared {prepared}") and "seven.png" in line
    assert "--overwrite" in line
    assert rows.read_text() == "mine\n" and (prepared / "seven.png").read_bytes() == b"mine"
    assert predict_main([*args, "--csv", str(rows), "--save_prepared", str(prepared), "--overwrite"]) == 0
    assert rows.read_text().startswith("file,digit") and Image.open(prepared / "seven.png").size == (28, 28)


@pytest.mark.parametrize("target", ["the_checkpoint", "a_symlink_to_it", "another_ckpt", "an_input"])
def test_the_csv_never_writes_over_a_checkpoint_or_an_input(target, cnn_checkpoint, tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    path = {
        "the_checkpoint": Path(cnn_checkpoint),
        "a_symlink_to_it": tmp_path / "rows.csv",
        "another_ckpt": tmp_path / "other.ckpt",
        "an_input": tmp_path / "seven.png",
    }[target]
    if target == "a_symlink_to_it":
        path.symlink_to(cnn_checkpoint)
    elif target == "another_ckpt":
        path.write_bytes(Path(cnn_checkpoint).read_bytes())
    before = path.read_bytes()
    code = predict_main(
        [str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--csv", str(path), "--overwrite"]
    )
    assert code == 2
    line = _err_line(capsys)
    assert line.startswith(f"mnist-bench predict: --csv {path}")
    assert ("input" if target == "an_input" else "checkpoint") in line
    assert path.read_bytes() == before


# --- file names are shown as they are, and the CSV is written before the table -------------------------
def test_file_names_with_markup_are_shown_verbatim(cnn_checkpoint, tmp_path, capsys):
    names = ["[/b].png", "[red]hidden.png", ":smile:.png"]  # the first is b].png in a folder named [
    (tmp_path / "[").mkdir()
    for name in names:
        Image.fromarray(drawing()).save(tmp_path / name)
    out = tmp_path / "rows.csv"
    files = [str(tmp_path / n) for n in names]
    assert predict_main([*files, "--ckpt_path", cnn_checkpoint, "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in names:
        assert name in printed, name
    assert {r["file"].removeprefix(f"{tmp_path}/") for r in csv.DictReader(out.open())} == set(names)


def test_the_csv_is_written_before_the_table(cnn_checkpoint, tmp_path, monkeypatch):
    from mnist_bench.inference import predict

    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    out = tmp_path / "rows.csv"

    def table_fails(*args, **kwargs):
        raise RuntimeError("the terminal went away")

    monkeypatch.setattr(predict, "print_table", table_fails)
    with pytest.raises(RuntimeError, match="terminal"):
        predict_main([str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--csv", str(out)])
    assert [r["file"] for r in csv.DictReader(out.open())] == [str(tmp_path / "seven.png")]


@pytest.mark.parametrize("device", ["meta", "foo", "cuda", "cuda:99", "cuda:x", "mps", ""])
def test_a_device_that_cannot_predict_is_one_line(device, cnn_checkpoint, tmp_path, capsys):
    present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if present.get(device):
        pytest.skip(f"this machine has a {device} device")
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    assert predict_main([str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--device", device]) == 2
    line = _err_line(capsys)
    assert line.startswith(f"mnist-bench predict: --device {device}") and "Fix: --device cpu" in line


@pytest.mark.parametrize("trap", ["a_folder", "a_link_out"])
def test_save_prepared_writes_only_plain_files_of_its_own(trap, cnn_checkpoint, tmp_path, capsys):
    """Where a prepared image would go, a folder is refused, and a link is refused even with --overwrite (it
    would write through to a file outside the folder)."""
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    prepared, outside = tmp_path / "prepared", tmp_path / "outside.txt"
    prepared.mkdir()
    outside.write_text("mine\n")
    if trap == "a_folder":
        (prepared / "seven.png").mkdir()
    else:
        (prepared / "seven.png").symlink_to(outside)
    args = [str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--save_prepared", str(prepared)]
    assert predict_main([*args, "--overwrite"]) == 2
    line = _err_line(capsys)
    assert line.startswith(f"mnist-bench predict: --save_prepared {prepared}") and "seven.png" in line
    assert outside.read_text() == "mine\n"


def test_a_long_input_name_gets_a_prepared_name_the_disk_takes(cnn_checkpoint, tmp_path):
    long = tmp_path / ("7" * 250 + ".png")  # 254 bytes: the name is legal, the same stem plus "-2.png" is not
    Image.fromarray(drawing()).save(long)
    (tmp_path / "b").mkdir()
    Image.fromarray(drawing()).save(tmp_path / "b" / long.name)
    out = tmp_path / "prepared"
    assert (
        predict_main(
            [str(long), str(tmp_path / "b"), "--ckpt_path", cnn_checkpoint, "--save_prepared", str(out)]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and all(len(n.encode()) <= 255 and n.endswith(".png") for n in names)


def test_a_csv_under_a_file_is_one_line_naming_that_file(cnn_checkpoint, tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    args = [
        str(tmp_path / "seven.png"),
        "--ckpt_path",
        cnn_checkpoint,
        "--csv",
        str(tmp_path / "seven.png/rows.csv"),
    ]
    assert predict_main(args) == 2
    line = _err_line(capsys)
    assert (
        line.startswith("mnist-bench predict: cannot write --csv")
        and "seven.png is a file, not a folder" in line
    )


@pytest.mark.parametrize(
    "target",
    ["metrics.json", "config.yaml", "test_predictions.npz", "checkpoints/notes.txt", "a reuse record"],
)
def test_a_runs_own_files_are_never_written_over_even_with_overwrite(
    target, cnn_checkpoint, tmp_path, capsys
):
    """predict --csv, export --output and benchmark.ab --output all refuse a run folder's files and a
    benchmark's reuse records."""
    from mnist_bench.benchmark.experiments.ab import main as ab_main
    from mnist_bench.inference.export import main as export_main

    run = tmp_path / "lightning_logs/cnn/version_0"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("metrics.json", "config.yaml", "test_predictions.npz", "checkpoints/notes.txt"):
        (run / name).write_text("the run's own")
    record = tmp_path / "results/runs/cnn-seed42.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"row": {"model": "cnn"}}')
    path = record if target == "a reuse record" else run / target
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    assert (
        predict_main(
            [str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--csv", str(path), "--overwrite"]
        )
        == 2
    )
    line = _err_line(capsys)
    assert "run folder" in line or "record of a finished run" in line, line
    assert export_main(["--ckpt_path", cnn_checkpoint, "--output", str(path), "--overwrite"]) == 2
    line = _err_line(capsys)
    assert "run folder" in line or "record of a finished run" in line, line
    if path.suffix == ".json":
        for arm in ("a", "b"):
            (tmp_path / arm).mkdir()
            (tmp_path / arm / "benchmark.json").write_text('{"rows": []}')
        assert (
            ab_main(
                [
                    "--a",
                    str(tmp_path / "a"),
                    "--b",
                    str(tmp_path / "b"),
                    "--output",
                    str(path.with_suffix("")),
                    "--overwrite",
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "run folder" in err or "record of a finished run" in err, err
    assert path.read_text().startswith(("the run's own", '{"row"'))


def test_a_terminal_escape_in_a_file_name_is_shown_escaped(cnn_checkpoint, tmp_path, capsys):
    name = "esc\x1b[31mred\x07.png"
    Image.fromarray(drawing()).save(tmp_path / name)
    assert predict_main([str(tmp_path / name), "--ckpt_path", cnn_checkpoint]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "esc\\x1b[31mred\\x07.png" in out


def test_the_sheet_shows_each_input_what_the_model_saw_and_marks_the_uncertain(
    cnn_checkpoint, tmp_path, capsys
):
    """An untrained CNN is unsure of everything: at --uncertain_below 1.0 every prediction is marked in the
    CSV, the table and the sheet (an orange frame); at 0.0 none is; a failed file is a tile with its
    reason."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(drawing()).save(folder / "seven.png")
    Image.fromarray(drawing(dark_on_light=False)).save(folder / "light.png")
    (folder / "broken.png").write_bytes(b"not an image")
    sheet, rows = tmp_path / "sheet.png", tmp_path / "rows.csv"
    args = [str(folder), "--ckpt_path", cnn_checkpoint, "--sheet", str(sheet), "--csv", str(rows)]
    assert predict_main([*args, "--uncertain_below", "1.0"]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 predictions are uncertain" in out and " ?" in out
    marks = {Path(r["file"]).name: r["uncertain"] for r in csv.DictReader(rows.open())}
    assert marks == {"seven.png": "yes", "light.png": "yes", "broken.png": ""}
    picture = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    from mnist_bench.inference.sheet import COLUMNS, FAILED, PAD, THUMB, UNCERTAIN

    assert picture.shape[1] == 3 * (2 * THUMB + 3 * PAD) and 3 < COLUMNS
    orange = (np.abs(picture - np.array(UNCERTAIN)).sum(-1) < 30).sum()
    red = (np.abs(picture - np.array(FAILED)).sum(-1) < 30).sum()
    assert orange > 4 * THUMB and red > 4 * THUMB
    # the tile of light.png (sorted: broken, light, seven) holds the prepared digit: a bright 28x28 image
    # scaled up
    seen = picture[PAD : PAD + THUMB, (2 * THUMB + 3 * PAD) + 2 * PAD + THUMB :][:, :THUMB]
    assert seen.max() > 200 and (seen < 30).mean() > 0.5
    assert predict_main([*args, "--uncertain_below", "0", "--overwrite"]) == 1
    assert "uncertain" not in capsys.readouterr().out
    assert {r["uncertain"] for r in csv.DictReader(rows.open())} == {""}
    picture = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    assert (np.abs(picture - np.array(UNCERTAIN)).sum(-1) < 30).sum() == 0


@pytest.mark.parametrize(
    "case", ["exists", "an_input", "same_as_csv", "not_png", "bad_threshold", "nan_threshold"]
)
def test_a_sheet_or_threshold_that_cannot_be_used_is_one_line(case, cnn_checkpoint, tmp_path, capsys):
    Image.fromarray(drawing()).save(tmp_path / "seven.png")
    before = (tmp_path / "seven.png").read_bytes()
    sheet = {
        "exists": tmp_path / "mine.png",
        "an_input": tmp_path / "seven.png",
        "same_as_csv": tmp_path / "r.png",
        "not_png": tmp_path / "sheet.jpg",
    }.get(case, tmp_path / "sheet.png")
    if case == "exists":
        sheet.write_bytes(b"mine")
    flags = {
        "same_as_csv": ["--csv", str(sheet)],
        "bad_threshold": ["--uncertain_below", "1.5"],
        "nan_threshold": ["--uncertain_below", "nan"],
    }.get(case, [])
    assert (
        predict_main(
            [str(tmp_path / "seven.png"), "--ckpt_path", cnn_checkpoint, "--sheet", str(sheet), *flags]
        )
        == 2
    )
    line = _err_line(capsys)
    expected = {
        "exists": "--overwrite",
        "an_input": "is the input",
        "same_as_csv": "both",
        "not_png": ".png",
        "bad_threshold": "from 0 to 1",
        "nan_threshold": "from 0 to 1",
    }[case]
    assert line.startswith("mnist-bench predict: ") and expected in line, line
    assert (tmp_path / "seven.png").read_bytes() == before
    assert case != "exists" or sheet.read_bytes() == b"mine"
