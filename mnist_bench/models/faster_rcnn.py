"""Faster R-CNN as a classifier: it finds the box around the digit's (or garment's) ink and names its
class."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveFloat, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes

from mnist_bench.errors import ConfigError
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.models.components.batched_rcnn import box_iou_pairs
from mnist_bench.models.components.detection import (
    LABEL_OFFSET,
    build_faster_rcnn,
    digit_to_label,
    ink_boxes,
    label_to_digit,
)

# A pixel is ink when it is brighter than half a grey level (the normalization round trip leaves ~1e-7 on
# zeros).
INK_THRESHOLD = 0.5 / 255


@contextmanager
def _training_mode(*modules: nn.Module) -> Iterator[None]:
    """Puts the RPN and RoI heads (no batch norm or dropout in either) in training mode so they return
    losses."""
    before = [m.training for m in modules]
    for m in modules:
        m.training = True
    try:
        yield
    finally:
        for m, mode in zip(modules, before, strict=True):
            m.training = mode


@dataclass
class Detections:
    """One batch's answer: the top detection per image as a digit, box and score, plus what the metrics
    need."""

    digits: Tensor  # N, the predicted digit
    boxes: Tensor  # N×4, the box of that prediction (x1, y1, x2, y2, input pixels)
    scores: Tensor  # N, its detection score (0 for a fallback)
    fallback: Tensor  # N, bool: no detection passed the score threshold
    fallback_probs: Tensor  # fallback images × 10: the box classifier's digit probabilities
    all: list[dict[str, Tensor]]  # every kept detection, torchvision's format with detector labels
    losses: dict[str, Tensor]


class FasterRCNNClassifier(MNISTClassifier):
    """torchvision's Faster R-CNN on a small stride-2 backbone, trained on the box around each digit's ink.

    * Targets: the tight box around the ink (pixels above half a grey level) of each (augmented) training
      image, computed on the device; label = digit + 1, 0 being background
      (``components.detection.digit_to_label``).
    * Classification: the digit of the highest-scoring detection. With no detection above ``score_threshold``
      the fallback is the box classifier's best digit for the RPN's top proposal; ``*/fallback_rate`` reports
      how often that happened.
    * Losses: ``train/loss``, ``val/loss`` and ``test/loss`` are the detection loss, the sum of torchvision's
      four (RPN objectness, RPN box regression, RoI classification, RoI box regression), not a cross-entropy.
    * Localization: ``*/iou`` is the mean IoU of the chosen box with the ink box; ``test/map50`` is COCO-style
      mAP at IoU 0.5 (torchmetrics, pycocotools backend).
    """

    model_name = "faster_rcnn"
    onnx_kind = "detector"
    # torchvision's detection post-processing fails under bf16 autocast (an index_put of bf16 boxes into fp32)
    mixed_precision = False
    loss_kind = "detection loss (sum of RPN objectness, RPN box, RoI class and RoI box losses)"

    def __init__(
        self,
        channels: Sequence[PositiveInt] = (32, 64, 64),
        anchor_sizes: Sequence[PositiveInt] = (8, 12, 16, 20),
        aspect_ratios: Sequence[PositiveFloat] = (1.0, 2.0, 4.0),
        roi_output_size: PositiveInt = 5,
        representation_size: PositiveInt = 256,
        rpn_proposals_train: PositiveInt = 16,
        rpn_proposals_test: PositiveInt = 8,
        rois_per_image: PositiveInt = 8,
        detections_per_image: PositiveInt = 4,
        score_threshold: ClosedUnitInterval = 0.05,
        **kwargs: Any,
    ):
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"model.score_threshold must be in [0, 1], got {score_threshold}")
        for key, value in (
            ("roi_output_size", roi_output_size),
            ("rois_per_image", rois_per_image),
            ("rpn_proposals_train", rpn_proposals_train),
            ("rpn_proposals_test", rpn_proposals_test),
            ("detections_per_image", detections_per_image),
        ):
            if value < 1:
                raise ConfigError(f"model.{key} must be at least 1, got {value}")
        super().__init__(**kwargs)
        self.save_hyperparameters(logger=False)
        self.detector = build_faster_rcnn(
            num_classes=self.num_classes,
            mean=self.dataset.mean,
            std=self.dataset.std,
            in_chans=self.adapt.in_chans,
            image_size=self.image_size,
            channels=channels,
            anchor_sizes=anchor_sizes,
            aspect_ratios=aspect_ratios,
            roi_output_size=roi_output_size,
            representation_size=representation_size,
            rpn_proposals_train=rpn_proposals_train,
            rpn_proposals_test=rpn_proposals_test,
            rois_per_image=rois_per_image,
            detections_per_image=detections_per_image,
            score_threshold=score_threshold,
        )
        self.localization = nn.ModuleDict(
            {
                f"{stage}_{name}": MeanMetric()
                for stage in ("val", "test")
                for name in ("iou", "fallback_rate")
            }
        )
        self.map50 = MeanAveragePrecision(iou_thresholds=[0.5], backend="pycocotools")
        self.final: dict[str, float | None] = {}

    # --- detection
    # -----------------------------------------------------------------------------------------------
    def images(self, x: Tensor) -> Tensor:
        """The detector's images: the DataModule's normalized batch back to [0, 1] pixels (its transform
        normalizes them again with the same mean and std, set explicitly for one channel)."""
        return self.dataset.denormalize(x).expand(-1, self.adapt.in_chans, -1, -1)

    def targets(self, x: Tensor, y: Tensor) -> list[dict[str, Tensor]]:
        boxes = ink_boxes(self.dataset.denormalize(x), INK_THRESHOLD)
        labels = digit_to_label(y)
        return [{"boxes": boxes[i : i + 1], "labels": labels[i : i + 1]} for i in range(len(y))]

    def detect(self, x: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Detections:
        """Runs the detector in eval mode; with ``targets`` it also returns the detection losses."""
        det = self.detector
        pixels = self.images(x)
        original_sizes = [(int(pixels.shape[-2]), int(pixels.shape[-1]))] * len(pixels)
        images, resized_targets = det.transform(pixels, targets)
        features = {"0": det.backbone(images.tensors)}
        losses: dict[str, Tensor] = {}
        if resized_targets is not None:
            # the losses' samplers draw random proposals: from a forked RNG, so evaluation leaves the training
            # batch order and augmentation as they would be without it
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                losses = self._losses(images, features, resized_targets)
        proposals, _ = det.rpn(images, features)
        found, _ = det.roi_heads(features, proposals, images.image_sizes)
        found = det.transform.postprocess(found, images.image_sizes, original_sizes)

        n = len(pixels)
        digits = torch.zeros(n, dtype=torch.long, device=x.device)
        boxes = torch.zeros(n, 4, device=x.device)
        scores = torch.zeros(n, device=x.device)
        fallback = torch.tensor([len(d["labels"]) == 0 for d in found], device=x.device)
        hit = (~fallback).nonzero().flatten().tolist()
        if hit:
            digits[hit] = label_to_digit(torch.stack([found[i]["labels"][0] for i in hit]))
            boxes[hit] = torch.stack([found[i]["boxes"][0] for i in hit])
            scores[hit] = torch.stack([found[i]["scores"][0] for i in hit])
        missed = fallback.nonzero().flatten().tolist()
        fallback_probs = torch.zeros(len(missed), self.num_classes, device=x.device)
        if missed:
            fallback_probs, boxes[missed] = self._fallback(
                features, proposals, images.image_sizes, original_sizes, missed
            )
            digits[missed] = fallback_probs.argmax(dim=1)
        return Detections(digits, boxes, scores, fallback, fallback_probs, found, losses)

    def _losses(
        self, images: ImageList, features: dict[str, Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The four detection losses, from the RPN and RoI heads in training mode."""
        det = self.detector
        with _training_mode(det.rpn, det.roi_heads):
            proposals, rpn_losses = det.rpn(images, features, targets)
            _, roi_losses = det.roi_heads(features, proposals, images.image_sizes, targets)
        return {**rpn_losses, **roi_losses}

    def _fallback(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        index: list[int],
    ) -> tuple[Tensor, Tensor]:
        """For images with no detection: the box classifier's digit probabilities (background excluded) for
        the RPN's top proposal, or for the whole image when the RPN kept none, and that box."""
        top = self._top_boxes(proposals, image_sizes, index)
        class_logits = self._box_logits(
            {k: v[index] for k, v in features.items()}, top, [image_sizes[i] for i in index]
        )
        probs = class_logits.softmax(dim=1)
        boxes = torch.cat(
            [resize_boxes(b, image_sizes[i], original_sizes[i]) for b, i in zip(top, index, strict=True)]
        )
        return probs, boxes

    @staticmethod
    def _top_boxes(
        proposals: list[Tensor], image_sizes: list[tuple[int, int]], index: list[int]
    ) -> list[Tensor]:
        """The RPN's top proposal of each image in ``index``, or the whole image where it kept none."""
        top = []
        for i in index:
            h, w = image_sizes[i]
            whole = torch.tensor([[0.0, 0.0, w, h]], device=proposals[i].device)
            top.append(proposals[i][:1] if len(proposals[i]) else whole)
        return top

    def _box_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> Tensor:
        """The box classifier's digit logits (background dropped) for one box per image."""
        heads = self.detector.roi_heads
        class_logits, _ = heads.box_predictor(
            heads.box_head(heads.box_roi_pool(features, boxes, image_sizes))
        )
        return class_logits[:, LABEL_OFFSET:].float()

    def attack_logits(self, x: Tensor) -> Tensor:
        """For gradient attacks: the box classifier's digit logits on the RPN's top proposal (the fallback
        path), differentiable in the pixels; the choice of box is not (the detections' threshold, NMS and
        top-1 have no gradient at all)."""
        det = self.detector
        pixels = (x * self.dataset.std + self.dataset.mean).expand(
            -1, self.adapt.in_chans, -1, -1
        )  # no clamp:
        images, _ = det.transform(pixels)  # its gradient is 0 at a background pixel that rounds below 0
        features = {"0": det.backbone(images.tensors)}
        with torch.no_grad():
            proposals, _ = det.rpn(images, features)
        index = list(range(len(x)))
        return self._box_logits(
            features, self._top_boxes(proposals, images.image_sizes, index), images.image_sizes
        )

    def forward(self, x: Tensor) -> Detections:
        return self.detect(x)

    def compile_target(self) -> nn.Module:
        """The backbone: proposals and detections change shape from batch to batch."""
        return self.detector.backbone

    # --- steps
    # ---------------------------------------------------------------------------------------------------
    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        """The detection loss; outside training also the digits, the chosen and the true boxes (and at test
        the class scores), with the localization metrics updated."""
        x, y = batch
        targets = self.targets(x, y)
        if stage == "train":
            images, targets = self.detector.transform(self.images(x), targets)
            loss = sum(self._losses(images, {"0": self.detector.backbone(images.tensors)}, targets).values())
            return {"loss": loss}
        out = self.detect(x, targets)
        truth = torch.cat([t["boxes"] for t in targets])
        self.localization[f"{stage}_iou"].update(box_iou_pairs(out.boxes, truth))
        self.localization[f"{stage}_fallback_rate"].update(out.fallback.float())
        result = {
            "loss": sum(out.losses.values()),
            "preds": out.digits,
            "boxes": out.boxes,
            "true_boxes": truth,
        }
        if stage == "test":
            self.map50.update(out.all, targets)
            result["scores"] = self._scores(out)
        return result

    def epoch_metrics(self, stage: str) -> dict[str, Tensor | float]:
        """``*/iou`` and ``*/fallback_rate`` after validation and test, and ``test/map50``."""
        if stage == "train":
            return {}
        values = {
            f"{stage}/{name}": self.localization[f"{stage}_{name}"].compute()
            for name in ("iou", "fallback_rate")
        }
        if stage == "test":
            values["test/map50"] = self.map50.compute()["map_50"]
            self.map50.reset()
        for metric in self.localization.values():
            metric.reset()
        if stage == "test":
            self.final = {key: float(value) for key, value in values.items()}
        return values

    def extra_metrics(self) -> dict[str, Any]:
        """Added to metrics.json by the run report."""
        return {
            "test/iou": self.final.get("test/iou"),
            "test/map50": self.final.get("test/map50"),
            "test/fallback_rate": self.final.get("test/fallback_rate"),
        }

    @torch.no_grad()
    def class_scores(self, x: Tensor) -> Tensor:
        """N×classes: each class's best detection score; the box classifier's probabilities where nothing was
        detected. Its argmax is the predicted class."""
        return self._scores(self.detect(x))

    def _scores(self, out: Detections) -> Tensor:
        scores = torch.zeros(len(out.digits), self.num_classes, device=out.digits.device)
        for i, found in enumerate(out.all):
            if len(found["labels"]):
                scores[i].scatter_reduce_(0, label_to_digit(found["labels"]), found["scores"], reduce="amax")
        scores[out.fallback] = out.fallback_probs
        return scores


FasterRCNN = FasterRCNNClassifier  # the name before 2026-11: checkpoints written then still load
