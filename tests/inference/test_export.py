"""`mnist-bench export`: ONNX files that onnxruntime runs to the same outputs as PyTorch, with the contract in
the metadata."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnist_bench.data.datasets import MNIST
from mnist_bench.inference.checkpoints import load_trained
from mnist_bench.inference.export import main as export_main
from mnist_bench.models import CNN, AlexNetClassifier, FasterRCNNClassifier, VGG16Classifier, ViT

normalize = MNIST.info.normalize

TINY = {
    "cnn": lambda: CNN(channels=(8, 16), hidden=32),
    "vgg16": lambda: VGG16Classifier(weights="none", image_size=32, hidden=32),
    "alexnet": lambda: AlexNetClassifier(weights="none", image_size=63, hidden=32),
    "vit": lambda: ViT(patch_size=7, dim=32, depth=2, num_heads=2),
    "faster_rcnn": lambda **kw: FasterRCNNClassifier(channels=(8, 16, 16), representation_size=32, **kw),
}


def checkpoint(model, path) -> str:
    """A checkpoint as LightningCLI writes it, for the parts that inference reads."""
    hparams = {k: v for k, v in model.hparams.items() if k not in ("optimizer", "scheduler")}
    class_path = f"mnist_bench.models.{type(model).__name__}"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {"_class_path": class_path, **hparams}}, path
    )
    return str(path)


def digits(n: int) -> torch.Tensor:
    pixels = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        pixels[i, 0, 4 + i : 24, 9 : 13 + 2 * i] = 1.0
    return normalize(pixels)


@pytest.mark.parametrize("name", ["cnn", "vgg16", "alexnet", "vit"])
def test_classifier_onnx_matches_pytorch_with_a_dynamic_batch(name, tmp_path):
    torch.manual_seed(0)
    ckpt = checkpoint(TINY[name](), tmp_path / "model.ckpt")
    assert export_main(["--ckpt_path", ckpt, "--output", str(tmp_path / "model.onnx")]) == 0
    model = load_trained(ckpt)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    for n in (1, 5):  # exported with a batch of 2: the batch axis is dynamic
        x = digits(n)
        (logits,) = session.run(None, {"digits": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert meta["mnist_bench.model"] == name
    assert meta["mnist_bench.mean"] == "0.1307" and meta["mnist_bench.std"] == "0.3081"
    assert "[batch, 1, 28, 28]" in meta["mnist_bench.input"]


def test_faster_rcnn_onnx_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    ckpt = checkpoint(TINY["faster_rcnn"](score_threshold=0.0), tmp_path / "det.ckpt")
    assert export_main(["--ckpt_path", ckpt, "--output", str(tmp_path / "det.onnx")]) == 0
    model = load_trained(ckpt)
    session = ort.InferenceSession(str(tmp_path / "det.onnx"))
    x = digits(3)
    for i in range(3):
        boxes, classes, scores = session.run(None, {"digits": x[i : i + 1].numpy()})
        with torch.no_grad():
            found = model.detect(x[i : i + 1]).all[0]
        assert len(scores) == len(found["scores"]) > 0
        np.testing.assert_array_equal(classes, found["labels"].numpy() - 1)
        np.testing.assert_allclose(boxes, found["boxes"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores, found["scores"].numpy(), atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "det.onnx")).metadata_props}
    assert meta["mnist_bench.model"] == "faster_rcnn" and "one image per call" in meta["mnist_bench.input"]


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert (
        export_main(["--ckpt_path", str(tmp_path / "none.ckpt"), "--output", str(tmp_path / "m.onnx")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


@pytest.mark.parametrize(
    "old_name, module",
    [
        ("FasterRCNN", "faster_rcnn"),
        ("AlexNet", "alexnet"),
        ("VGG16", "vgg"),
        ("AlexNet", None),
        ("FasterRCNN", None),
    ],
)
def test_checkpoints_from_before_the_renames_and_datasets_still_load(old_name, module, tmp_path):
    """Checkpoints written before the LightningModules were renamed (FasterRCNN -> FasterRCNNClassifier, ...)
    and before models kept their dataset's info name the old class and carry no ``dataset``: they load as
    MNIST's."""
    name = {"FasterRCNN": "faster_rcnn", "AlexNet": "alexnet", "VGG16": "vgg16"}[old_name]
    model = TINY[name]()
    hparams = {k: v for k, v in model.hparams.items() if k not in ("optimizer", "scheduler", "dataset")}
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {
                "_class_path": f"mnist_bench.models.{module + '.' if module else ''}{old_name}",
                **hparams,
            },
        },
        path,
    )
    loaded = load_trained(path)
    assert type(loaded) is type(model) and loaded.dataset.name == "mnist" and loaded.num_classes == 10


def _run_folder(tmp_path) -> tuple[Path, Path]:
    """A run's folder as fit leaves it: its only checkpoint, and last.ckpt linked to it."""
    torch.manual_seed(0)
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    only = Path(checkpoint(TINY["cnn"](), checkpoints / "epoch=0-step=10.ckpt"))
    (checkpoints / "last.ckpt").symlink_to(only.name)
    return tmp_path / "run", only


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("output", ["the_only_ckpt", "last_link", "relative", "hardlink", "another_ckpt"])
def test_export_never_writes_over_a_checkpoint(output, overwrite, tmp_path, capsys, monkeypatch):
    run, only = _run_folder(tmp_path)
    before = only.read_bytes()
    monkeypatch.chdir(run)
    target = {
        "the_only_ckpt": str(only),
        "last_link": str(run / "checkpoints/last.ckpt"),
        "relative": "checkpoints/../checkpoints/epoch=0-step=10.ckpt",
        "hardlink": str(tmp_path / "model.onnx"),
        "another_ckpt": str(tmp_path / "old.ckpt"),
    }[output]
    if output == "hardlink":
        Path(target).hardlink_to(only)
    elif output == "another_ckpt":
        Path(target).write_bytes(before)
    code = export_main(["--ckpt_path", str(run), "--output", target, *(["--overwrite"] if overwrite else [])])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mnist-bench export: --output {target} is a checkpoint"), err
    assert only.read_bytes() == before and Path(target).read_bytes() == before
    assert load_trained(run).model_name == "cnn"


def test_an_existing_onnx_file_needs_overwrite(tmp_path, capsys):
    run, _ = _run_folder(tmp_path)
    output = tmp_path / "cnn.onnx"
    output.write_bytes(b"mine")
    assert export_main(["--ckpt_path", str(run), "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"mnist-bench export: --output {output} exists. Fix: --overwrite to replace it, or "
        "another --output file"
    ]
    assert output.read_bytes() == b"mine"
    assert export_main(["--ckpt_path", str(run), "--output", str(output), "--overwrite"]) == 0
    assert onnx.load(str(output)).graph.input[0].name == "digits"


def test_an_output_under_a_file_is_one_line_naming_that_file(tmp_path, capsys):
    run, _ = _run_folder(tmp_path)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    output = blocker / "sub" / "cnn.onnx"
    assert export_main(["--ckpt_path", str(run), "--output", str(output), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0] and "not a folder" in err[0] and "Fix:" in err[0], err
    assert blocker.read_text() == "mine\n"
