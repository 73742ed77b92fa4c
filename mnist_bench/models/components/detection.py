"""Parts of the detector: ink boxes as targets, the label mapping, a small backbone and torchvision's Faster
R-CNN sized for 28-px images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from mnist_bench.models.components.batched_rcnn import BatchedRoIHeads, BatchedRPN, BatchedTransform

# The detector's class 0 is background, so digit d is detector label d + 1. These two functions are the only
# place that knows it.
LABEL_OFFSET = 1


def digit_to_label(digits: Tensor) -> Tensor:
    return digits + LABEL_OFFSET


def label_to_digit(labels: Tensor) -> Tensor:
    return labels - LABEL_OFFSET


def ink_boxes(pixels: Tensor, threshold: float = 0.0) -> Tensor:
    """The tight box (x1, y1, x2, y2) around each image's ink, the pixels brighter than ``threshold``.

    ``pixels`` is N×1×H×W (or N×H×W) in [0, 1]. Box edges are pixel edges: a digit whose ink spans columns
    4..19 gets x1 = 4, x2 = 20. An image with no ink gets the whole image, so every target is a valid box.
    """
    ink = pixels.reshape(pixels.shape[0], pixels.shape[-2], pixels.shape[-1]) > threshold
    height, width = ink.shape[-2:]
    rows, cols = ink.any(dim=2), ink.any(dim=1)  # N×H, N×W

    def span(mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
        first = mask.int().argmax(dim=1)
        last = size - mask.flip(1).int().argmax(dim=1)
        empty = ~mask.any(dim=1)
        return first.masked_fill(empty, 0), last.masked_fill(empty, size)

    y1, y2 = span(rows, height)
    x1, x2 = span(cols, width)
    return torch.stack([x1, y1, x2, y2], dim=1).to(
        pixels.dtype if pixels.is_floating_point() else torch.float32
    )


class DigitBackbone(nn.Module):
    """conv-BN-ReLU stages with a max-pool after each but the last: stride 2 for two stages, a 14×14 feature
    map for a 28-px digit, fine enough for pixel-accurate boxes."""

    def __init__(self, in_chans: int = 1, channels: Sequence[int] = (32, 64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_chans
        for i, out in enumerate(channels):
            layers += [
                nn.Conv2d(ch, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if i == 0:
                layers.append(nn.MaxPool2d(2))
            ch = out
        self.body = nn.Sequential(*layers)
        self.out_channels = ch
        self.stride = 2

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def build_faster_rcnn(
    *,
    num_classes: int,
    mean: float,
    std: float,
    in_chans: int = 1,
    image_size: int = 28,
    channels: Sequence[int] = (32, 64, 64),
    anchor_sizes: Sequence[int] = (8, 12, 16, 20),
    aspect_ratios: Sequence[float] = (1.0, 2.0, 4.0),
    roi_output_size: int = 7,
    representation_size: int = 256,
    rpn_proposals_train: int = 16,
    rpn_proposals_test: int = 8,
    rois_per_image: int = 16,
    detections_per_image: int = 4,
    score_threshold: float = 0.05,
) -> FasterRCNN:
    """torchvision's Faster R-CNN (RPN, RoI heads, box coder, NMS) on :class:`DigitBackbone`.

    No resize to 800 px: ``min_size = max_size = image_size``. Anchors (``aspect_ratios`` are height / width)
    cover digits from a thin 1 to a wide 0. The transform normalizes with the dataset's ``mean`` and ``std``;
    the box predictor has ``num_classes`` + 1 outputs (0 is background).
    """
    backbone = DigitBackbone(in_chans, channels)
    anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=roi_output_size, sampling_ratio=1)
    head = TwoMLPHead(backbone.out_channels * roi_output_size**2, representation_size)
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=image_size,
        max_size=image_size,
        image_mean=[mean] * in_chans,
        image_std=[std] * in_chans,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=4 * rpn_proposals_train,
        rpn_post_nms_top_n_train=rpn_proposals_train,
        rpn_pre_nms_top_n_test=4 * rpn_proposals_test,
        rpn_post_nms_top_n_test=rpn_proposals_test,
        rpn_batch_size_per_image=64,
        box_roi_pool=roi_pool,
        box_head=head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes + LABEL_OFFSET),
        box_batch_size_per_image=rois_per_image,
        box_positive_fraction=0.5,
        box_detections_per_img=detections_per_image,
        box_score_thresh=score_threshold,
    )
    return batched(model, size_divisible=backbone.stride * 2)  # 28 px stays 28 px (torchvision pads to 32)


def batched(model: FasterRCNN, size_divisible: int) -> FasterRCNN:
    """``model`` with its transform, RPN and RoI heads replaced by the batched ones of ``batched_rcnn``: the
    same modules (weights), thresholds and sizes."""
    rpn, heads, transform = model.rpn, model.roi_heads, model.transform
    model.transform = BatchedTransform(
        transform.min_size,
        transform.max_size,
        transform.image_mean,
        transform.image_std,
        size_divisible=size_divisible,
    )
    model.rpn = BatchedRPN(
        rpn.anchor_generator,
        rpn.head,
        rpn.proposal_matcher.high_threshold,
        rpn.proposal_matcher.low_threshold,
        rpn.fg_bg_sampler.batch_size_per_image,
        rpn.fg_bg_sampler.positive_fraction,
        rpn._pre_nms_top_n,
        rpn._post_nms_top_n,
        rpn.nms_thresh,
        rpn.score_thresh,
    )
    model.roi_heads = BatchedRoIHeads(
        heads.box_roi_pool,
        heads.box_head,
        heads.box_predictor,
        heads.proposal_matcher.high_threshold,
        heads.proposal_matcher.low_threshold,
        heads.fg_bg_sampler.batch_size_per_image,
        heads.fg_bg_sampler.positive_fraction,
        heads.box_coder.weights,
        heads.score_thresh,
        heads.nms_thresh,
        heads.detections_per_img,
    )
    return model
