"""The batched Faster R-CNN transform, RPN and RoI heads give torchvision's answers: the same images,
proposals, detections and losses (with samplers that take every candidate, so that no random draw differs),
and torchvision's own code where a batch does not fit the batched path."""

import copy

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms

from mnist_bench.models.components.batched_rcnn import Proposals, nms_rows, sample_balanced
from mnist_bench.models.components.detection import build_faster_rcnn

N = 12


def as_torchvision(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """The same module (weights, thresholds) run by torchvision's class."""
    reference = copy.copy(module)
    reference.__class__ = cls
    return reference


@pytest.fixture
def detector():
    torch.manual_seed(0)
    return build_faster_rcnn(num_classes=10, mean=0.1307, std=0.3081).eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    pixels = torch.rand(N, 1, 28, 28)
    corner = torch.randint(0, 6, (N, 2)).float()
    boxes = torch.cat([corner, corner + torch.tensor([14.0, 20.0])], dim=1)
    targets = [{"boxes": boxes[i : i + 1], "labels": torch.tensor([i % 10 + 1])} for i in range(N)]
    return pixels, targets


def run_heads(model, pixels, targets=None, reference=False):
    transform, rpn, heads = model.transform, model.rpn, model.roi_heads
    if reference:
        transform = as_torchvision(transform, GeneralizedRCNNTransform)
        rpn = as_torchvision(rpn, RegionProposalNetwork)
        heads = as_torchvision(heads, RoIHeads)
    images, targets = transform(list(pixels) if reference else pixels, targets)
    features = {"0": model.backbone(images.tensors)}
    proposals, rpn_losses = rpn(images, features, targets)
    found, roi_losses = heads(features, proposals, images.image_sizes, targets)
    return images, proposals, found, {**rpn_losses, **roi_losses}


@torch.no_grad()
def test_inference_matches_torchvision(detector, batch):
    pixels, _ = batch
    images, proposals, found, _ = run_heads(detector, pixels)
    ref_images, ref_proposals, ref_found, _ = run_heads(detector, pixels, reference=True)
    assert torch.equal(images.tensors, ref_images.tensors) and images.image_sizes == ref_images.image_sizes
    assert isinstance(proposals, Proposals)
    assert [len(p) for p in proposals] == [len(p) for p in ref_proposals]
    assert sum(len(p) for p in proposals) > N, "the check needs images with several proposals"
    for mine, theirs in zip(proposals, ref_proposals, strict=True):
        torch.testing.assert_close(mine, theirs)
    assert sum(len(d["labels"]) for d in found) > N, "the check needs images with several detections"
    for mine, theirs in zip(found, ref_found, strict=True):
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"])
        torch.testing.assert_close(mine["scores"], theirs["scores"])


def test_training_losses_match_torchvision_when_every_candidate_is_sampled(detector, batch):
    pixels, targets = batch
    for module in (detector.rpn, detector.roi_heads):
        module.train()
        module.fg_bg_sampler.batch_size_per_image = 10**6  # every positive and negative: no random draw
    *_, losses = run_heads(detector, pixels, targets)
    *_, ref_losses = run_heads(detector, pixels, targets, reference=True)
    assert (
        losses.keys()
        == ref_losses.keys()
        == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    )
    for key in losses:
        torch.testing.assert_close(losses[key], ref_losses[key], msg=key)
        assert losses[key] > 0, key
    grads = torch.autograd.grad(sum(losses.values()), detector.roi_heads.box_predictor.bbox_pred.weight)
    ref_grads = torch.autograd.grad(
        sum(ref_losses.values()), detector.roi_heads.box_predictor.bbox_pred.weight
    )
    torch.testing.assert_close(grads[0], ref_grads[0])


def test_sampled_training_losses_are_finite_and_reach_every_head(detector, batch):
    pixels, targets = batch
    detector.train()
    *_, losses = run_heads(detector, pixels, targets)
    sum(losses.values()).backward()
    for name in (
        "rpn.head.cls_logits.weight",
        "rpn.head.bbox_pred.weight",
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "backbone.body.0.weight",
    ):
        grad = dict(detector.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_a_batch_with_two_boxes_in_an_image_takes_torchvision_s_path(detector, batch):
    pixels, targets = batch
    targets[0] = {"boxes": torch.tensor([[1.0, 1, 10, 10], [12, 12, 26, 26]]), "labels": torch.tensor([3, 4])}
    detector.train()
    detector.transform.eval()  # in training torchvision's transform draws a (here single) size per image
    torch.manual_seed(5)
    *_, losses = run_heads(detector, pixels, targets)
    torch.manual_seed(5)
    *_, ref_losses = run_heads(detector, pixels, targets, reference=True)
    for key in losses:
        torch.testing.assert_close(losses[key], ref_losses[key], msg=key)


def test_sampler_takes_the_right_number_from_the_right_set():
    torch.manual_seed(0)
    labels = torch.tensor(
        [
            [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, -1, -1],  # 5 positives: 4 taken, then 4 negatives
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1],  # 1 positive, 7 negatives
            [-1, -1, -1, -1, 0, 0, -1, -1, -1, -1, -1, -1],
        ]
    )  # 0 positives, only 2 negatives exist
    counts = {i: torch.zeros(12) for i in range(3)}
    for _ in range(200):
        positive, negative = sample_balanced(labels, per_image=8, positive_fraction=0.5)
        assert positive.sum(1).tolist() == [4, 1, 0]
        assert negative.sum(1).tolist() == [4, 7, 2]
        assert (labels[positive] >= 1).all() and (labels[negative] == 0).all()
        for i in range(3):
            counts[i] += (positive | negative)[i].float()
    # uniform draws: each of the first row's five positives is taken about 4/5 of the time
    assert counts[0][:5].min() > 0.6 * 200 and counts[0][:5].max() < 0.97 * 200


def test_row_nms_matches_torchvision_per_row():
    torch.manual_seed(0)
    for _ in range(20):
        xy = torch.rand(4, 30, 2) * 20
        boxes = torch.cat([xy, xy + 2 + torch.rand(4, 30, 2) * 8], dim=-1)
        scores = torch.rand(4, 30)
        groups = torch.randint(0, 3, (4, 30))
        valid = torch.rand(4, 30) > 0.2
        order, keep = nms_rows(boxes, scores, groups, valid, 0.5)
        for i in range(4):
            index = valid[i].nonzero().flatten()
            expected = index[batched_nms(boxes[i, index], scores[i, index], groups[i, index], 0.5)]
            assert order[i][keep[i]].tolist() == expected.tolist()


def test_heads_losses_with_few_or_no_proposals_in_some_images_match_torchvision(detector, batch):
    pixels, targets = batch
    detector.train()
    detector.roi_heads.fg_bg_sampler.batch_size_per_image = 10**6
    images, targets = detector.transform(pixels, targets)
    features = {"0": detector.backbone(images.tensors)}
    torch.manual_seed(3)
    proposals = []
    for i in range(N):  # 0 to 3 proposals: the batched heads pad the rest with empty boxes
        xy = torch.rand(i % 4, 2) * 14
        proposals.append(torch.cat([xy, xy + 4 + torch.rand(i % 4, 2) * 10], dim=1))
    _, losses = detector.roi_heads(features, proposals, images.image_sizes, targets)
    _, ref_losses = as_torchvision(detector.roi_heads, RoIHeads)(
        features, proposals, images.image_sizes, targets
    )
    for key in losses:
        torch.testing.assert_close(losses[key], ref_losses[key], msg=key)
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in detector.roi_heads.parameters() if p.grad is not None)
