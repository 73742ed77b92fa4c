"""A user's digit image made into an MNIST digit, the way MNIST's own digits were made.

Grayscale; dark ink on a light background detected and inverted (MNIST is light ink on black); cropped to the ink's
bounding box; scaled so that the longer side is 20 px, keeping the aspect ratio; placed in a 28×28 field so that the
ink's centre of mass is at the centre. Any size and mode that Pillow reads (RGBA, palette, 16-bit, ...).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_bench.errors import UserFacingError

FIELD = 28  # the MNIST image
BOX = 20  # the longer side of the digit inside it
INK_LEVEL = 0.2  # after background removal, pixels above this fraction of the brightest are ink (for the crop)
MAX_PIXELS = 40_000_000  # larger images are refused (Pillow's decompression-bomb guard, made an error)


class ImageError(UserFacingError):
    """This file can't be made into a digit; the message says why."""


def read_image(path: str | Path) -> Image.Image:
    """Opens and fully decodes an image, refusing what is not an image, truncated or too large."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{img.width}×{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
                img.load()
                return ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"refused as a decompression bomb ({err})") from None
    except Image.UnidentifiedImageError:
        size = Path(path).stat().st_size if Path(path).exists() else 0
        raise ImageError("empty file" if size == 0 else "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"unreadable image ({err})") from None


def to_gray(img: Image.Image) -> np.ndarray:
    """Floats in [0, 1], 1 = white. Transparency is laid over white; 16- and 32-bit modes keep their range."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())
        return np.clip(arr / top, 0, 1)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return np.clip(arr if arr.max(initial=0) <= 1 else arr / 255.0, 0, 1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def light_ink_on_dark(gray: np.ndarray) -> np.ndarray:
    """Inverts dark-on-light images (paper, scans), judged by the border, then stretches background to 0 and the
    brightest ink to 1."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray = 1.0 - gray
        border = 1.0 - border
    background = float(np.median(border))
    top = float(gray.max())
    if top - background < 0.1:
        raise ImageError("no ink found (the image is blank or has no contrast)")
    return np.clip((gray - background) / (top - background), 0, 1)


def mnist_digit(ink: np.ndarray) -> np.ndarray:
    """Light-on-dark ink (any size) → a 28×28 float image in [0, 1], framed as MNIST frames its digits."""
    rows, cols = np.nonzero(ink > INK_LEVEL)
    if len(rows) == 0:
        raise ImageError("no ink found")
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(crop.astype(np.float32)).resize((new_w, new_h), Image.LANCZOS))
    resized = np.clip(resized, 0, 1)
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    mass = resized.sum()
    cy = (resized.sum(axis=1) * np.arange(new_h)).sum() / mass
    cx = (resized.sum(axis=0) * np.arange(new_w)).sum() / mass
    centre = (FIELD - 1) / 2
    top, left = int(round(centre - cy)), int(round(centre - cx))
    top, left = min(max(top, 0), FIELD - new_h), min(max(left, 0), FIELD - new_w)
    field[top : top + new_h, left : left + new_w] = resized
    return field


def load_digit(path: str | Path) -> np.ndarray:
    """The whole pipeline for one file: a 28×28 float32 array in [0, 1], light ink on black."""
    return mnist_digit(light_ink_on_dark(to_gray(read_image(path))))
