"""The Faster R-CNN digit detector: ink boxes, the label mapping, IoU and mAP on known boxes, the fallback
path."""

import json

import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from mnist_bench.cli import main
from mnist_bench.data.datasets import MNIST
from mnist_bench.models import FasterRCNNClassifier
from mnist_bench.models.components.batched_rcnn import box_iou_pairs
from mnist_bench.models.components.detection import digit_to_label, ink_boxes, label_to_digit

from ..conftest import ROOT

normalize = MNIST.info.normalize


def test_ink_box_is_tight_around_the_non_zero_pixels():
    images = torch.zeros(3, 1, 28, 28)
    images[0, 0, 5:10, 3:8] = 0.7  # rows 5..9, columns 3..7
    images[1, 0, 27, 0] = 1 / 255  # one faint pixel in the bottom-left corner
    # images[2] stays empty
    boxes = ink_boxes(images, threshold=0.5 / 255)
    assert boxes[0].tolist() == [3, 5, 8, 10]
    assert boxes[1].tolist() == [0, 27, 1, 28]
    assert boxes[2].tolist() == [0, 0, 28, 28], "an empty image gets the whole image as its box"


def test_ink_box_ignores_the_normalization_round_trip():
    pixels = torch.zeros(1, 1, 28, 28)
    pixels[0, 0, 4:24, 10:16] = 1.0
    model = FasterRCNNClassifier()
    (target,) = model.targets(normalize(pixels), torch.tensor([7]))
    assert target["boxes"].tolist() == [[10, 4, 16, 24]]
    assert target["labels"].tolist() == [8]


def test_label_mapping_both_ways():
    digits = torch.arange(10)
    labels = digit_to_label(digits)
    assert labels.min() == 1, "label 0 is the detector's background"
    assert torch.equal(label_to_digit(labels), digits)


def test_pairwise_iou_on_known_boxes():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [1, 1, 3, 3]])
    assert box_iou_pairs(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0, 4 / 16])


def test_map50_on_known_boxes():
    target = [
        {"boxes": torch.tensor([[2.0, 2, 20, 24]]), "labels": torch.tensor([4])},
        {"boxes": torch.tensor([[5.0, 3, 12, 25]]), "labels": torch.tensor([2])},
    ]
    right = [
        {
            "boxes": torch.tensor([[2.0, 3, 20, 24]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([4]),
        },
        {
            "boxes": torch.tensor([[5.0, 3, 12, 24]]),
            "scores": torch.tensor([0.8]),
            "labels": torch.tensor([2]),
        },
    ]
    wrong_label = [dict(right[0], labels=torch.tensor([5])), dict(right[1], labels=torch.tensor([3]))]
    far_box = [dict(right[0], boxes=torch.tensor([[20.0, 20, 28, 28]])), right[1]]
    scores = []
    for preds in (right, wrong_label, far_box):
        metric = MeanAveragePrecision(iou_thresholds=[0.5], backend="pycocotools")
        metric.update(preds, target)
        scores.append(float(metric.compute()["map_50"]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.0)
    assert scores[2] == pytest.approx(0.5), "one class found, the other missed"


def _digits(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        pixels[i, 0, 4 + i : 24, 8 : 14 + i] = 1.0
    return normalize(pixels), torch.arange(n) % 10


def test_detect_returns_the_four_losses_and_one_answer_per_image():
    torch.manual_seed(0)
    model = FasterRCNNClassifier().eval()
    x, y = _digits()
    with torch.no_grad():
        out = model.detect(x, model.targets(x, y))
    assert set(out.losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert out.digits.shape == (6,) and out.boxes.shape == (6, 4)
    assert ((out.digits >= 0) & (out.digits <= 9)).all()


def test_fallback_when_nothing_is_detected():
    torch.manual_seed(0)
    model = FasterRCNNClassifier(score_threshold=1.0).eval()  # no score passes, so every image falls back
    x, _ = _digits()
    with torch.no_grad():
        out = model.detect(x)
    assert out.fallback.all()
    assert all(len(d["labels"]) == 0 for d in out.all)
    assert ((out.digits >= 0) & (out.digits <= 9)).all()
    assert (out.boxes[:, 2:] > out.boxes[:, :2]).all(), "the fallback box is the RPN's top proposal"
    assert (out.scores == 0).all()


def test_fast_dev_run_of_the_config_writes_detection_metrics_and_box_grid(tiny_fit_args, tmp_path):
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "faster_rcnn.yaml"),
            *tiny_fit_args,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
        ]
    )
    (run_dir,) = (tmp_path / "lightning_logs" / "faster_rcnn").glob("version_*")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["loss_kind"].startswith("detection loss")
    for key in ("test/acc", "test/iou", "test/map50", "test/fallback_rate"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "val/iou" in metrics["history"][0] and "train/acc" not in metrics["history"][0]
    assert (run_dir / "detections.png").stat().st_size > 10_000


def test_evaluation_leaves_the_training_rng_alone():
    """The val/test loss runs torchvision's proposal samplers, which draw random numbers: they must not shift
    the training batch order or augmentation that come after."""
    torch.manual_seed(0)
    model = FasterRCNNClassifier().eval()
    x = normalize(torch.rand(4, 1, 28, 28))
    targets = model.targets(x, torch.tensor([1, 2, 3, 4]))
    before = torch.get_rng_state()
    with torch.no_grad():
        out = model.detect(x, targets)
    assert out.losses, "the losses were computed"
    assert torch.equal(torch.get_rng_state(), before)
