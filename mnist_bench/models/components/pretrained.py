"""torchvision ImageNet backbones (VGG16, AlexNet) with a 1-channel stem and a slim 10-class head.

ImageNet weights are read from torch.hub's cache (``$TORCH_HOME/hub/checkpoints/<file>``, default
``~/.cache/torch``) or from a path, with ``weights_only=True``. When the cache lacks them, ``imagenet`` and
``auto`` fetch torchvision's file into it first, checked against the sha256 prefix in its name as torch.hub
does; offline, that fails at once and ``auto`` trains from scratch.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn
from torchvision import models as tvm

from mnist_bench.errors import UserFacingError, first_line

# arch -> (constructor, ImageNet weights enum member, smallest input that survives its pooling)
ARCHS = {
    "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1, 32),
    "alexnet": (tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1, 63),
}
STEM_KEY = "features.0.weight"  # the first conv of both VGG16 and AlexNet
# A base URL that replaces torchvision's (a mirror; the tests' server on 127.0.0.1)
WEIGHTS_URL_VARIABLE = "MNIST_BENCH_WEIGHTS_URL"
CONNECT_TIMEOUT_S = 10.0  # for the connection and each read
DOWNLOAD_LIMIT_S = 1800.0  # for the whole file (VGG16's is 528 MB)
MAX_DOWNLOAD_BYTES = 1 << 30


class WeightsError(UserFacingError):
    """Weights that were asked for can't be found or read; the message names the file and the fix."""


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision would cache the ImageNet weights, e.g.
    ``~/.cache/torch/hub/checkpoints/vgg16-397923af.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ARCHS[arch][1].url)


def weights_url(arch: str) -> str:
    url = ARCHS[arch][1].url
    base = os.environ.get(WEIGHTS_URL_VARIABLE)
    return f"{base.rstrip('/')}/{os.path.basename(url)}" if base else url


def expected_hash_prefix(path: Path) -> str:
    """The sha256 prefix in a torchvision weights file's name (``vgg16-397923af.pth`` -> ``397923af``)."""
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    return match.group(1) if match else ""


def download_weights(url: str, path: Path, timeout_s: float | None = None) -> None:
    """Fetches ``url`` to ``path`` through a temporary file, checks its sha256 prefix, then moves it in place.
    Raises OSError (urllib's errors included) when the file can't be fetched, WeightsError when it is not the
    one named."""
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} to {path}", file=sys.stderr, flush=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        deadline = time.monotonic() + DOWNLOAD_LIMIT_S
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout_s or CONNECT_TIMEOUT_S) as response,
        ):
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                if out.tell() > MAX_DOWNLOAD_BYTES or time.monotonic() > deadline:
                    raise OSError(
                        f"stopped after {out.tell():,} bytes: larger than {MAX_DOWNLOAD_BYTES:,} bytes "
                        f"or slower than {DOWNLOAD_LIMIT_S:.0f} s"
                    )
        prefix = expected_hash_prefix(path)
        if not digest.hexdigest().startswith(prefix):
            raise WeightsError(
                f"downloaded {url}, but its sha256 {digest.hexdigest()[:16]}... does not start with "
                f"{prefix} as its name says: not the published file, so it was not used"
            )
        os.replace(tmp, path)
    except http.client.HTTPException as err:  # a connection cut off mid-file, a garbled reply
        raise OSError(f"{type(err).__name__}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt, truncated or pickle-carrying file all end here
        raise WeightsError(f"cannot read weights file {path}: {first_line(err)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state


def resolve_weights(arch: str, weights: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Returns (state dict or None, description). ``weights`` is imagenet, auto, none or a path to a .pth
    file."""
    if weights == "none":
        return None, "random init (weights: none)"
    if weights in ("imagenet", "auto"):
        path = imagenet_weights_path(arch)
        if not path.is_file():
            url = weights_url(arch)
            try:
                download_weights(url, path)
            except (OSError, urllib.error.URLError) as err:  # offline, refused, timed out, cut off, disk full
                reason = getattr(err, "reason", None) or err
                fix = (
                    f"download {url} on a machine with internet and copy it to {path} (or point TORCH_HOME "
                    f"elsewhere), or pass --model.init_args.weights=none to train from scratch"
                )
                if weights == "imagenet":
                    raise WeightsError(
                        f"ImageNet weights for {arch} not at {path} and not downloadable ({reason}): {fix}"
                    ) from None
                warnings.warn(
                    f"\n*** {arch}: no ImageNet weights at {path} and the download failed ({reason}); "
                    f"TRAINING FROM SCRATCH (metrics.json records pretrained: false). To fine-tune "
                    f"instead: {fix}.\n",
                    stacklevel=2,
                )
                return None, f"random init (no ImageNet weights at {path})"
        return _read_state_dict(path), f"ImageNet weights from {path}"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} not found (model.init_args.weights is imagenet, auto, none or a path)"
        )
    return _read_state_dict(path), f"weights from {path}"


class TorchvisionBackbone(nn.Module):
    """A torchvision VGG16/AlexNet ``features`` stack, its RGB stem summed to ``in_chans`` channels when
    weights are loaded (timm's ``adapt_input_conv``), then global average pooling and a slim head.

    The ImageNet head (two 4096-wide layers, ~120M parameters in VGG16) is replaced by
    ``Linear(C, hidden) - ReLU - Dropout - Linear(hidden, num_classes)``: at 32-64 px the features end at 1×1
    or 2×2, so the 7×7×512 input the ImageNet head expects would be 49 copies of the same vector.
    """

    def __init__(
        self,
        arch: str,
        state_dict: dict[str, torch.Tensor] | None = None,
        in_chans: int = 1,
        hidden: int = 256,
        dropout: float = 0.5,
        num_classes: int = 10,
    ):
        super().__init__()
        build = ARCHS[arch][0]
        net = build(weights=None)  # never let torchvision download
        features: nn.Sequential = net.features
        if state_dict is not None:
            feats = {
                k.removeprefix("features."): v for k, v in state_dict.items() if k.startswith("features.")
            }
            if STEM_KEY.removeprefix("features.") not in feats:
                raise WeightsError(f"the weights have no {STEM_KEY}: not a torchvision {arch} state dict")
            stem = feats["0.weight"]
            if stem.shape[1] != in_chans:
                feats["0.weight"] = adapt_input_conv(in_chans, stem, base_chans=stem.shape[1])
            self._replace_stem(features, in_chans)
            try:
                features.load_state_dict(feats)
            except RuntimeError as err:
                raise WeightsError(
                    f"the weights do not fit torchvision's {arch}: {first_line(err)}"
                ) from None
        else:
            self._replace_stem(features, in_chans)
        self.features = features
        out_channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(out_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    @staticmethod
    def _replace_stem(features: nn.Sequential, in_chans: int) -> None:
        old: nn.Conv2d = features[0]
        if old.in_channels == in_chans:
            return
        new = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding)
        # torchvision's own init for this conv (Kaiming, fan-out), so from-scratch runs start like the
        # original
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(new.bias)
        features[0] = new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))
