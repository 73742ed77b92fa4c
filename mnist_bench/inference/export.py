"""``mnist-bench export``: a trained model to ONNX, with the preprocessing contract in the model's metadata.

    mnist-bench export --ckpt_path lightning_logs/cnn/version_0 --output cnn.onnx

Classifiers (CNN, VGG16, AlexNet, ViT), through torch's ``torch.export``-based exporter: input ``digits``,
float32 N×1×28×28 normalized as in training, with a dynamic batch axis; output ``logits``, N×10 (softmax for
probabilities). The model's own input adaptation (resize to its image size, channel count) is inside the
graph.

Faster R-CNN, through the TorchScript-based exporter that torchvision's detection models support: input
``digits``, one normalized 1×1×28×28 image per call; outputs ``boxes`` (K×4, x1 y1 x2 y2 in pixels),
``classes`` (K digits) and ``scores`` (K), best first. With no detection K is 0 (``mnist-bench predict`` then
falls back to the box classifier).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_bench.allowlist import ALLOW_IMPORTS_FLAG, ALLOW_IMPORTS_HELP, allowed_packages
from mnist_bench.errors import ConfigError, UserFacingError, first_line
from mnist_bench.inference.checkpoints import load_trained, resolve_checkpoint
from mnist_bench.inference.images import FRAMING_STEPS
from mnist_bench.inference.outputs import (
    NEVER_REPLACED,
    OVERWRITE_FLAG,
    OVERWRITE_HELP,
    file_in_the_way,
    owned,
)
from mnist_bench.models.components.detection import label_to_digit
from mnist_bench.utils import atomic_path

OPSET = 18
DETECTOR_OPSET = 17  # torchvision's detection ops (RoIAlign, NMS) through the TorchScript-based exporter


class ExportError(UserFacingError):
    """The model can't be exported; the message says why and what to use instead."""


def metadata(model: nn.Module, ckpt_path: str) -> dict[str, str]:
    info = model.dataset
    size = info.image_size
    if model.onnx_kind == "detector":
        shape = f"digits: float32 [1, 1, {size}, {size}] (one image per call; {info.name}), normalized"
        outputs = (
            "boxes: float32 [K, 4] (x1, y1, x2, y2 in pixels), classes: int64 [K] (the class index), scores:"
            " float32 [K]"
        )
    else:
        shape = f"digits: float32 [batch, 1, {size}, {size}] ({info.name} images), normalized"
        outputs = f"logits: float32 [batch, {info.num_classes}], class k = mnist_bench.classes[k]"
    return {
        "mnist_bench.model": model.model_name,
        "mnist_bench.checkpoint": str(ckpt_path),
        "mnist_bench.dataset": info.name,
        "mnist_bench.input": shape,
        "mnist_bench.normalization": f"(pixel / 255 - {info.mean}) / {info.std}",
        "mnist_bench.mean": str(info.mean),
        "mnist_bench.std": str(info.std),
        "mnist_bench.preprocessing": FRAMING_STEPS[info.framing],
        "mnist_bench.output": outputs,
        "mnist_bench.classes": json.dumps(list(info.class_names)),
    }


class DetectorForExport(nn.Module):
    """The detector on one normalized digit: its boxes, digits and scores, best first."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.model.detector(self.model.images(digits))[0]
        return found["boxes"], label_to_digit(found["labels"]), found["scores"]


def _classifier_proto(model: nn.Module) -> Any:
    size = model.dataset.image_size
    example = torch.zeros(2, 1, size, size)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["digits"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        verbose=False,
    )
    return program.model_proto


def _detector_proto(model: nn.Module) -> Any:
    import onnx

    buf = io.BytesIO()
    size = model.dataset.image_size
    torch.onnx.export(
        DetectorForExport(model),
        (torch.zeros(1, 1, size, size),),
        buf,
        dynamo=False,
        opset_version=DETECTOR_OPSET,
        input_names=["digits"],
        output_names=["boxes", "classes", "scores"],
        dynamic_axes={"boxes": {0: "detections"}, "classes": {0: "detections"}, "scores": {0: "detections"}},
    )
    return onnx.load_from_string(buf.getvalue())


def export_onnx(model: nn.Module, output: str | Path, meta: dict[str, str]) -> Path:
    """Exports the model (see the module's docstring for the two kinds) and stores ``meta`` in the file."""
    import onnx

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            proto = _detector_proto(model) if model.onnx_kind == "detector" else _classifier_proto(model)
        except Exception as err:  # the exporters raise many types; the user gets one line
            raise ExportError(
                f"{model.model_name} did not export to ONNX: {type(err).__name__}: {first_line(err)}"
            ) from err
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
    return output


def output_refusal(output: Path, checkpoint: Path, overwrite: bool) -> str | None:
    """Why ``--output`` may not be written (checked before the export): a checkpoint never is, another
    existing file only with --overwrite."""
    if (reason := owned(output, (), checkpoint)) is not None:
        return f"--output {output} {reason}, and {NEVER_REPLACED}. Fix: --output model.onnx (a new file)"
    if output.is_dir():
        return f"--output {output} is a folder. Fix: --output {output / 'model.onnx'}"
    if (blocker := file_in_the_way(output)) is not None:
        return (
            f"--output {output}: {blocker} is a file, not a folder. Fix: an --output outside it, e.g."
            " model.onnx"
        )
    if output.exists() and not overwrite:
        return f"--output {output} exists. Fix: {OVERWRITE_FLAG} to replace it, or another --output file"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mnist-bench export", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument(
        "--ckpt_path",
        required=True,
        help="a .ckpt file, or a run dir (lightning_logs/<model>/version_<n>) for its last.ckpt",
    )
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument(OVERWRITE_FLAG, action="store_true", help=OVERWRITE_HELP)
    parser.add_argument(ALLOW_IMPORTS_FLAG, action="append", metavar="PKG", help=ALLOW_IMPORTS_HELP)
    args = parser.parse_args(argv)
    try:
        if problem := output_refusal(Path(args.output), resolve_checkpoint(args.ckpt_path), args.overwrite):
            print(f"mnist-bench export: {problem}", file=sys.stderr)
            return 2
        model = load_trained(args.ckpt_path, allow_imports=allowed_packages(args.allow_imports))
        meta = metadata(model, args.ckpt_path)
        path = export_onnx(model, args.output, meta)
    except (ConfigError, UserFacingError) as err:
        print(f"mnist-bench export: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"mnist-bench export: could not write {args.output}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(
        f"wrote {path} ({model.model_name}; input {meta['mnist_bench.input']}; output"
        f" {meta['mnist_bench.output']})"
    )
    return 0
