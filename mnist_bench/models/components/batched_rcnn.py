"""torchvision's Faster R-CNN transform, RPN and RoI heads, computed for the whole batch at once.

torchvision handles a batch image by image in Python: resizing, anchor matching, sampling, NMS and
post-processing each run once per image, many of them with a host sync. For 128 digits that is thousands of
tiny operations a step, which bounds the detector on a GPU. Here every image has the same size and exactly one
target box, so the same computations are done on N×K tensors: the same matcher thresholds, sampling
proportions, NMS rule (IoU > threshold suppresses, per level or per class) and losses. A batch of any other
shape (several boxes in an image, images of different sizes) and tracing for ONNX export take torchvision's
own code. Boxes with exactly equal scores may be ordered differently than torchvision orders them, so NMS can
keep another of the tied boxes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_iou, clip_boxes_to_image, roi_align


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def _one_size(image_sizes: list[tuple[int, int]]) -> bool:
    return all(tuple(size) == tuple(image_sizes[0]) for size in image_sizes)


def one_box_each(targets: list[dict[str, Tensor]] | None) -> tuple[Tensor, Tensor] | None:
    """The batch's target boxes (N×4) and labels (N) when every image has exactly one box, else None."""
    if not targets or any(t["boxes"].shape[0] != 1 for t in targets):
        return None
    return torch.cat([t["boxes"] for t in targets]), torch.cat([t["labels"] for t in targets])


class Proposals(list):
    """The RPN's proposals as torchvision passes them on (one K×4 tensor per image, best first), which also
    carries them as one padded N×P×4 tensor with its N×P validity mask, so the RoI heads need not rebuild
    it."""

    def __init__(self, boxes: Tensor, valid: Tensor):
        self.counts = valid.sum(dim=1).tolist()  # the one host sync of the RPN
        super().__init__(boxes[valid].split(self.counts))
        self.padded, self.valid = boxes, valid


def _padded(proposals: list[Tensor]) -> tuple[Tensor, Tensor]:
    if isinstance(proposals, Proposals):
        return proposals.padded, proposals.valid
    longest = max(len(p) for p in proposals)
    boxes = (
        torch.nn.utils.rnn.pad_sequence(list(proposals), batch_first=True)
        if longest
        else proposals[0].new_zeros(len(proposals), 0, 4)
    )
    lengths = torch.tensor([len(p) for p in proposals], device=boxes.device)
    return boxes, torch.arange(longest, device=boxes.device) < lengths[:, None]


def random_subset(mask: Tensor, count: Tensor) -> Tensor:
    """N×K bool: ``count[i]`` entries of row i drawn uniformly without replacement from where ``mask`` is True
    (``count[i]`` must not exceed the row's True entries)."""
    keys = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    return mask & (rank < count[:, None])


def sample_balanced(labels: Tensor, per_image: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """torchvision's ``BalancedPositiveNegativeSampler`` on N×K labels (>= 1 positive, 0 negative, -1
    ignored): per image min(positives, int(per_image × positive_fraction)) positives and up to the rest of
    ``per_image`` in negatives, drawn at random. Returns the N×K masks of the sampled positives and
    negatives."""
    positive, negative = labels >= 1, labels == 0
    num_pos = positive.sum(dim=1).clamp(max=int(per_image * positive_fraction))
    num_neg = torch.minimum(negative.sum(dim=1), per_image - num_pos)
    return random_subset(positive, num_pos), random_subset(negative, num_neg)


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each box in ``a`` with the box at the same place in ``b`` (both ...×4, x1 y1 x2 y2)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(dim=-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


def pairwise_iou(boxes: Tensor) -> Tensor:
    """N×K×K: the IoU of every pair of boxes within each row of N×K×4 boxes."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def nms_rows(
    boxes: Tensor, scores: Tensor, groups: Tensor, valid: Tensor, iou_threshold: float
) -> tuple[Tensor, Tensor]:
    """Greedy NMS within each row of N×K boxes, between boxes of the same group only (torchvision's
    ``batched_nms`` per row). Returns ``order`` (N×K, each row's boxes by decreasing score) and ``keep`` (N×K
    bool, in that order): invalid boxes are never kept."""
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True)
    boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    groups, keep = groups.gather(1, order), valid.gather(1, order)
    suppresses = (pairwise_iou(boxes) > iou_threshold) & (groups[:, :, None] == groups[:, None, :])
    for i in range(boxes.shape[1] - 1):  # K steps, each over the whole batch
        keep[:, i + 1 :] &= ~(suppresses[:, i, i + 1 :] & keep[:, i : i + 1])
    return order, keep


def first_kept(order: Tensor, keep: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """The first ``limit`` kept entries of each row, as indices into the unsorted row (N×limit) and their
    validity (N×limit): rows with fewer kept entries are padded with invalid slots."""
    kept = keep & (keep.cumsum(dim=1) <= limit)
    # kept entries first, in score order; the rest behind them
    position = (~kept).to(torch.int8).argsort(dim=1, stable=True)[:, :limit]
    return order.gather(1, position), kept.gather(1, position)


class BatchedTransform(GeneralizedRCNNTransform):
    """Normalizes a whole N×C×H×W batch at once when it needs no resizing or padding (images already at the
    working size)."""

    def _unchanged(self, height: int, width: int) -> bool:
        if self.fixed_size is not None or len(set(self.min_size)) != 1:
            return False
        scale = min(self.min_size[0] / min(height, width), self.max_size / max(height, width))
        return scale == 1.0 and height % self.size_divisible == 0 and width % self.size_divisible == 0

    def forward(self, images, targets=None):  # noqa: ANN001, ANN201 (torchvision's signature)
        if (
            isinstance(images, Tensor)
            and images.dim() == 4
            and not _tracing()
            and self._unchanged(*images.shape[-2:])
        ):
            mean = torch.as_tensor(self.image_mean, dtype=images.dtype, device=images.device)
            std = torch.as_tensor(self.image_std, dtype=images.dtype, device=images.device)
            tensors = (images - mean[None, :, None, None]) / std[None, :, None, None]
            size = (int(images.shape[-2]), int(images.shape[-1]))
            return ImageList(tensors, [size] * len(images)), targets
        return super().forward(list(images), targets)

    def postprocess(self, result, image_shapes, original_image_sizes):  # noqa: ANN001, ANN201
        if image_shapes == original_image_sizes:
            return result
        return super().postprocess(result, image_shapes, original_image_sizes)


class BatchedRPN(RegionProposalNetwork):
    """torchvision's RPN, batched: anchors matched to each image's one target box, balanced sampling, and NMS
    on N×K tensors. Same thresholds, proportions and losses."""

    def forward(
        self, images: ImageList, features: dict[str, Tensor], targets: list[dict[str, Tensor]] | None = None
    ):  # noqa: ANN201
        target = one_box_each(targets) if self.training else None
        if _tracing() or not _one_size(images.image_sizes) or (self.training and target is None):
            return super().forward(images, features, targets)
        maps = list(features.values())
        objectness, deltas = self.head(maps)
        per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
        anchors = self.anchor_generator(ImageList(images.tensors[:1], images.image_sizes[:1]), maps)[0]  # A×4
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)  # N·A×1, N·A×4
        n, a = len(images.image_sizes), len(anchors)
        every_anchor = anchors.repeat(n, 1)
        proposals = self.box_coder.decode_single(deltas.detach(), every_anchor).view(n, a, 4)
        boxes = self.filter_proposals(proposals, objectness, images.image_sizes, per_level)[0]
        losses = {}
        if self.training:
            labels, matched = self.match(anchors, target[0])
            regression = self.box_coder.encode_single(matched.reshape(-1, 4), every_anchor).view(n, a, 4)
            losses = self.batched_loss(objectness.view(n, a), deltas.view(n, a, 4), labels, regression)
        return boxes, losses

    def match(self, anchors: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
        """torchvision's ``Matcher`` for one box per image: labels N×A (1 object, 0 background, -1 between the
        thresholds) and the matched box of every anchor (N×A×4)."""
        iou = box_iou(gt_boxes, anchors)  # N×A
        matcher = self.proposal_matcher
        labels = torch.full_like(iou, -1.0)
        labels[iou >= matcher.high_threshold] = 1.0
        labels[iou < matcher.low_threshold] = 0.0
        if matcher.allow_low_quality_matches:  # the anchors that overlap the box best are objects too
            labels[iou == iou.max(dim=1, keepdim=True).values] = 1.0
        return labels, gt_boxes[:, None, :].expand(-1, len(anchors), -1)

    def batched_loss(
        self, objectness: Tensor, deltas: Tensor, labels: Tensor, regression: Tensor
    ) -> dict[str, Tensor]:
        sampler = self.fg_bg_sampler
        positive, negative = sample_balanced(labels, sampler.batch_size_per_image, sampler.positive_fraction)
        sampled = positive | negative
        count = sampled.sum().clamp(min=1)
        box_loss = F.smooth_l1_loss(deltas, regression, beta=1 / 9, reduction="none").sum(dim=-1)
        bce = F.binary_cross_entropy_with_logits(objectness, labels.clamp(min=0), reduction="none")
        return {
            "loss_objectness": torch.where(sampled, bce, 0).sum() / count,
            "loss_rpn_box_reg": torch.where(positive, box_loss, 0).sum() / count,
        }

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ):  # noqa: ANN201
        if _tracing() or not _one_size(image_shapes):
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        n = proposals.shape[0]
        objectness = objectness.detach().reshape(n, -1)
        levels = torch.cat(
            [
                torch.full((count,), level, dtype=torch.int64, device=proposals.device)
                for level, count in enumerate(num_anchors_per_level)
            ]
        )
        top = self._get_top_n_idx(objectness, num_anchors_per_level)  # N×T, best of each level
        rows = torch.arange(n, device=proposals.device)[:, None]
        scores = objectness[rows, top].sigmoid()
        boxes = clip_boxes_to_image(proposals[rows, top], image_shapes[0])
        size_ok = ((boxes[..., 2] - boxes[..., 0]) >= self.min_size) & (
            (boxes[..., 3] - boxes[..., 1]) >= self.min_size
        )
        valid = size_ok & (scores >= self.score_thresh)
        order, keep = nms_rows(boxes, scores, levels[top], valid, self.nms_thresh)
        index, valid = first_kept(order, keep, self.post_nms_top_n())
        chosen = boxes.gather(1, index[..., None].expand(-1, -1, 4)) * valid[..., None]
        proposals = Proposals(chosen, valid)
        return proposals, list(scores.gather(1, index)[valid].split(proposals.counts))


class BatchedRoIHeads(RoIHeads):
    """torchvision's box RoI heads, batched: proposals matched to each image's one target box, balanced
    sampling of ``batch_size_per_image`` RoIs, and per-class NMS of the detections on N×K tensors."""

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ):  # noqa: ANN201
        target = one_box_each(targets) if self.training else None
        single_level = len(features) == 1 and self.mask_roi_pool is None and self.keypoint_roi_pool is None
        if (
            _tracing()
            or not single_level
            or not _one_size(image_shapes)
            or (self.training and target is None)
            or not proposals
        ):
            return super().forward(features, proposals, image_shapes, targets)
        boxes, valid = _padded(proposals)
        if self.training:
            return [], self._losses(features, boxes, valid, image_shapes, *target)
        return self._detections(features, boxes, valid, image_shapes), {}

    def _box_outputs(
        self, features: dict[str, Tensor], boxes: Tensor, image_shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:  # noqa: E501
        """Class logits and box regression for N×R boxes (flattened to N·R rows)."""
        feature_map = next(iter(features.values()))
        # the feature map's scale as MultiScaleRoIAlign infers it: a power of two
        scale = 2.0 ** round(math.log2(feature_map.shape[-2] / image_shapes[0][0]))
        n, r = boxes.shape[:2]
        index = torch.arange(n, device=boxes.device, dtype=feature_map.dtype).repeat_interleave(r)[:, None]
        rois = torch.cat([index, boxes.reshape(-1, 4).to(feature_map.dtype)], dim=1)
        pool = self.box_roi_pool
        pooled = roi_align(
            feature_map, rois, pool.output_size, spatial_scale=scale, sampling_ratio=pool.sampling_ratio
        )
        return self.box_predictor(self.box_head(pooled))

    def _losses(
        self,
        features: dict[str, Tensor],
        boxes: Tensor,
        valid: Tensor,
        image_shapes: list[tuple[int, int]],
        gt_boxes: Tensor,
        gt_labels: Tensor,
    ) -> dict[str, Tensor]:
        gt_boxes = gt_boxes.to(boxes.dtype)
        boxes = torch.cat([boxes, gt_boxes[:, None]], dim=1)  # the target box is a proposal too
        valid = torch.cat([valid, valid.new_ones(len(valid), 1)], dim=1)
        iou = box_iou_pairs(boxes, gt_boxes[:, None].expand_as(boxes))
        labels = torch.where(iou >= self.proposal_matcher.high_threshold, gt_labels[:, None], 0)
        labels[
            (iou >= self.proposal_matcher.low_threshold) & (iou < self.proposal_matcher.high_threshold)
        ] = -1
        labels[~valid] = -1
        positive, negative = sample_balanced(
            labels, self.fg_bg_sampler.batch_size_per_image, self.fg_bg_sampler.positive_fraction
        )
        sampled = positive | negative
        every = torch.arange(boxes.shape[1], device=boxes.device).expand(len(boxes), -1)
        pick, used = first_kept(every, sampled, self.fg_bg_sampler.batch_size_per_image)  # the sampled first
        rois = boxes.gather(1, pick[..., None].expand(-1, -1, 4))
        labels = (labels.gather(1, pick) * used).flatten()  # unused slots: background, left out of the losses
        used = used.flatten()
        class_logits, box_regression = self._box_outputs(features, rois, image_shapes)
        count = used.sum().clamp(min=1)
        classification = (
            torch.where(used, F.cross_entropy(class_logits, labels, reduction="none"), 0).sum() / count
        )
        # an unused slot may hold padding (an empty box, whose regression target is not finite): its target is
        # computed against the image's own box instead, and left out of the loss
        gt_each = gt_boxes[:, None].expand_as(rois)
        safe = torch.where(used.view(len(rois), -1, 1), rois, gt_each)
        targets = self.box_coder.encode_single(gt_each.reshape(-1, 4), safe.reshape(-1, 4))
        predicted = box_regression.reshape(len(labels), -1, 4)[
            torch.arange(len(labels), device=labels.device), labels
        ]
        box_loss = F.smooth_l1_loss(predicted, targets, beta=1 / 9, reduction="none").sum(dim=1)
        box_loss = torch.where(used & (labels > 0), box_loss, 0).sum() / count
        return {"loss_classifier": classification, "loss_box_reg": box_loss}

    def _detections(
        self, features: dict[str, Tensor], boxes: Tensor, valid: Tensor, image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        n, p = boxes.shape[:2]
        class_logits, box_regression = self._box_outputs(features, boxes, image_shapes)
        classes = class_logits.shape[-1]
        found = self.box_coder.decode_single(box_regression, boxes.reshape(-1, 4)).reshape(n, p, classes, 4)
        found = clip_boxes_to_image(found, image_shapes[0])
        scores = F.softmax(class_logits, -1).reshape(n, p, classes)
        labels = torch.arange(classes, device=boxes.device).expand(n, p, classes)
        # background dropped; one candidate per proposal and class
        found, scores, labels = (
            found[:, :, 1:].reshape(n, -1, 4),
            scores[:, :, 1:].reshape(n, -1),
            labels[:, :, 1:].reshape(n, -1),
        )
        big_enough = ((found[..., 2] - found[..., 0]) >= 1e-2) & ((found[..., 3] - found[..., 1]) >= 1e-2)
        candidate = valid.repeat_interleave(classes - 1, dim=1) & (scores > self.score_thresh) & big_enough
        order, keep = nms_rows(found, scores, labels, candidate, self.nms_thresh)
        index, kept = first_kept(order, keep, self.detections_per_img)
        counts = kept.sum(dim=1).tolist()  # the one host sync of the heads
        pick = index[..., None].expand(-1, -1, 4)
        columns = (
            found.gather(1, pick)[kept].split(counts),
            scores.gather(1, index)[kept].split(counts),
            labels.gather(1, index)[kept].split(counts),
        )
        return [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(*columns, strict=True)]
