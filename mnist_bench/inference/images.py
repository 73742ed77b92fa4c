"""A user's image made into one of the dataset's images, framed the way the dataset framed its own.

Two framings, named by the dataset (``DatasetInfo.framing``):

- ``digit`` (MNIST, KMNIST: ink strokes): grayscale; dark ink on a light background detected and inverted
  (MNIST is light ink on black); the background (uneven light, grey paper) estimated locally and removed, the
  ink found by Otsu's threshold, specks dropped; cropped to the ink's bounding box; scaled so that the longer
  side is 20 px, keeping the aspect ratio; placed in a 28×28 field so that the ink's centre of mass is at the
  centre.
- ``product`` (Fashion-MNIST: a product photo on a plain background), Zalando's own steps: the edges that have
  the background's colour (within 5% of the range; specks much smaller than the object ignored) trimmed; the
  longer side scaled to 28 px; sharpened; centred in the 28×28 field by its box; negated where the object is
  darker than its background, so that the object is light on black.

Any size and mode that Pillow reads (RGBA, palette, 16-bit, ...).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_bench.data.datasets import FRAMINGS
from mnist_bench.errors import UserFacingError

FIELD = 28  # the MNIST image
BOX = 20  # the longer side of the digit inside it
INK_LEVEL = (
    0.2  # after background removal, pixels above this fraction of the brightest are ink (for the crop)
)
MIN_CONTRAST = 0.05  # ink must stand out from the local background by this much (of the full range)
KEEP_FRACTION = 0.1  # connected ink components smaller than this fraction of the largest are specks
WORKING_SIZE = 256  # px, the longer side the background and threshold are computed at
SMOOTHING_PX = 1.0  # Gaussian sigma at that size against noise (less for smaller images, none below 128 px)
# the blurred copy the stroke width is measured against: a sigma of this fraction of the longer side follows
# uneven light and is wider than a bold marker's strokes
BLUR_FRACTION = 1 / 5
PAPER_SHARE = 0.45  # a light part covering more of the image than this, not its border, is paper on a desk
NOISE_SIGMAS = 6.0  # ink stands out from the background's noise by at least this many standard deviations
MAX_PIXELS = 40_000_000  # larger images are refused (Pillow's decompression-bomb guard, made an error)


TRIM_TOLERANCE = 0.05  # product framing: pixels this close to the background's level are background


# each framing in one line, for the ONNX metadata of an exported model
FRAMING_STEPS = {
    "digit": (
        "grayscale; invert dark-on-light; crop to the ink; scale the longer side to 20 px; centre of mass at "
        "the centre of the 28x28 field"
    ),
    "product": (
        "grayscale; trim the edges within 5% of the background's level; scale the longer side to 28 px; "
        "sharpen; centre the box in the 28x28 field; negate a light background"
    ),
}


class ImageError(UserFacingError):
    """This file can't be made into the dataset's kind of image; the message says why."""


def read_image(path: str | Path) -> Image.Image:
    """Opens and fully decodes an image, refusing what is not an image, truncated or too large."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(
                        f"{img.width}×{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit"
                    )
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
        finite = np.isfinite(arr)
        if not finite.any():
            raise ImageError("no finite pixel values (all NaN or infinite)")
        arr = np.where(finite, arr, np.median(arr[finite]))  # a NaN pixel takes the image's typical value
        return np.clip(arr if arr.max(initial=0) <= 1 else arr / 255.0, 0, 1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    try:
        return np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except (
        ValueError,
        OSError,
    ) as err:  # modes Pillow opens but cannot convert (LAB, some CMYK and HSV files)
        raise ImageError(f"{img.mode} images are not supported ({err}); save it as PNG or JPEG") from None


def light_ink_on_dark(gray: np.ndarray, row: bool = False) -> np.ndarray:
    """:func:`ink_in_window`'s ink alone."""
    return ink_in_window(gray, row)[0]


def ink_in_window(gray: np.ndarray, row: bool = False) -> tuple[np.ndarray, Window]:
    """Ink as light on black, from a scan or a photograph, and the part of ``gray`` it covers (all of it, or
    the sheet of paper in a photo of paper on a desk) as shares of ``gray``'s width and height: dark-on-light
    images (paper) are inverted; the background (paper, shade, uneven light) is estimated locally by a
    morphological opening wider than a stroke and taken away; Otsu's threshold finds the ink, and connected
    components much smaller than the largest (specks, noise, dirt) are dropped. Returns the ink's contrast, 0
    outside the kept strokes and 1 at the strongest ink. ``row``: the image is a row of digits (a number),
    whose height, not its length, is a digit's scale."""
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.morphology import dilation, disk, opening

    gray = _working_size(gray, row)
    side = min(gray.shape) if row else max(gray.shape)  # the length a digit's scale is measured against
    sigma = SMOOTHING_PX * side / WORKING_SIZE  # 1 px for a photo, nothing for a 28-px digit
    if sigma >= 0.5:
        gray = gaussian(gray, sigma=sigma)  # sensor noise and JPEG blocks
    window = Window()
    if (sheet := paper_on_a_desk(gray)) is not None:  # a photo of the paper on a desk: the paper, dark ink
        (height, width), (rows, cols) = gray.shape, sheet
        window = Window(cols.start / width, rows.start / height, cols.stop / width, rows.stop / height)
        gray = 1.0 - gray[sheet]
    elif dark_ink(gray, side):
        gray = 1.0 - gray
    # the opening's disk must not fit inside a stroke, or the stroke's middle is taken for background (bold
    # marker strokes came out hollow): at least the stroke width, measured on a first, opening-free threshold
    radius = max(2, round(side / 10), int(np.ceil(stroke_width(gray, side))))
    background = opening(gray, disk(radius, decomposition="sequence"))
    contrast = np.clip(gray - background, 0, None)
    if contrast.max() < MIN_CONTRAST:
        raise ImageError("no ink found (the image is blank or has no contrast)")
    strokes = contrast > max(threshold_otsu(contrast), noise_floor(contrast))
    components = label(strokes, connectivity=2)
    areas = np.bincount(components.ravel())
    areas[0] = 0
    keep = np.isin(components, np.nonzero(areas >= KEEP_FRACTION * areas.max())[0])
    top = float(np.percentile(contrast[keep], 95))
    return np.clip(contrast / top, 0, 1) * dilation(keep, disk(1)), window


@dataclass(frozen=True)
class Window:
    """A part of an image as shares of its width and height: left, top, right, bottom (exclusive)."""

    left: float = 0.0
    top: float = 0.0
    right: float = 1.0
    bottom: float = 1.0

    def share(
        self, box: tuple[int, int, int, int], shape: tuple[int, ...]
    ) -> tuple[float, float, float, float]:
        """``box`` (left, top, right, bottom in px of an image of ``shape`` that fills this window) as shares
        of the whole image."""
        height, width = shape[:2]
        x = self.right - self.left
        y = self.bottom - self.top
        left, top, right, bottom = box
        return (
            self.left + x * left / width,
            self.top + y * top / height,
            self.left + x * right / width,
            self.top + y * bottom / height,
        )


def noise_floor(contrast: np.ndarray) -> float:
    """A level that noise alone seldom reaches: the median contrast plus NOISE_SIGMAS robust standard
    deviations (from the median absolute deviation). Otsu's threshold splits the noise itself where a small,
    thin digit is a tiny part of a noisy photo; the ink must also stand out from the noise."""
    median = float(np.median(contrast))
    return median + NOISE_SIGMAS * 1.4826 * float(np.median(np.abs(contrast - median)))


def stroke_width(gray: np.ndarray, side: int | None = None) -> float:
    """The width in px of the widest strokes (90th percentile along their centre lines) of light ink on a
    darker background, from Otsu's threshold of the image less a blurred copy of itself (which follows uneven
    light but not the strokes) and the distance of each centre-line pixel to the background."""
    from scipy.ndimage import distance_transform_edt
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import skeletonize

    residual = gray - gaussian(gray, sigma=(side or max(gray.shape)) * BLUR_FRACTION)
    if np.ptp(residual) < MIN_CONTRAST:
        return 0.0
    ink = residual > threshold_otsu(residual)
    centre = skeletonize(ink)
    if not centre.any():
        return 0.0
    return 2.0 * float(np.percentile(distance_transform_edt(ink)[centre], 90))


def dark_ink(gray: np.ndarray, side: int | None = None) -> bool:
    """Whether the ink is darker than its paper (pencil on paper) rather than lighter (chalk, MNIST). Told
    from the frame's border, which shows the paper: the image less a blurred copy of itself (rid of uneven
    light) is split by Otsu's threshold, and the ink is dark when most of the border is in the lighter part.
    (Which pixels stand out most from the blur, the rule before, fails where bold ink covers much of the
    frame.)"""
    from skimage.filters import gaussian, threshold_otsu

    residual = gray - gaussian(gray, sigma=(side or max(gray.shape)) / 10)
    if np.ptp(residual) == 0:
        return False
    border = np.concatenate([residual[0], residual[-1], residual[1:-1, 0], residual[1:-1, -1]])
    return bool((border > threshold_otsu(residual)).mean() > 0.5)


def paper_on_a_desk(gray: np.ndarray) -> tuple[slice, slice] | None:
    """Where the sheet of paper is, when a photo shows it on a darker desk: the largest light part (Otsu's
    threshold of the image) when it covers more than PAPER_SHARE of the image but not its border, shrunk by 2%
    so that the paper's edge is left out; None otherwise."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    if np.ptp(gray) == 0:
        return None
    light = gray > threshold_otsu(gray)
    if light.mean() <= PAPER_SHARE or light[[0, -1]].mean() > 0.5 or light[:, [0, -1]].mean() > 0.5:
        return None
    paper = max(regionprops(label(light)), key=lambda r: r.area)
    top, left, bottom, right = paper.bbox
    dy, dx = max(1, round(0.02 * gray.shape[0])), max(1, round(0.02 * gray.shape[1]))
    return slice(top + dy, bottom - dy), slice(left + dx, right - dx)


def _working_size(gray: np.ndarray, row: bool = False) -> np.ndarray:
    """Large images (photos) shrunk, with anti-aliasing, so that the longer side (for a row of digits, the
    shorter) is WORKING_SIZE px: a digit ends at 20 px anyway, and the filters run on a bounded image."""
    scale = WORKING_SIZE / (min(gray.shape) if row else max(gray.shape))
    if scale >= 1:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.LANCZOS), dtype=np.float64)


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


def product_photo(gray: np.ndarray) -> np.ndarray:
    """A photo of one object on a plain background (any size, 1 = white) → a 28×28 float image in [0, 1],
    framed as Fashion-MNIST frames its garments: trimmed to the object, the longer side 28 px, centred by its
    box, the background black."""
    from skimage.filters import gaussian, unsharp_mask

    gray = _working_size(gray)
    sigma = SMOOTHING_PX * max(gray.shape) / WORKING_SIZE
    smooth = gaussian(gray, sigma=sigma) if sigma >= 0.5 else gray  # JPEG noise must not count as object
    border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    background = float(np.median(border))
    differs = np.abs(smooth - background) > TRIM_TOLERANCE
    if not differs.any():
        raise ImageError("no object found (the image is one plain colour)")
    rows, cols = np.nonzero(_without_specks(differs))
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    if (
        smooth[differs].mean() < background
    ):  # darker than its background (a product on white): negate, as Fashion-
        crop, background = 1.0 - crop, 1.0 - background  # MNIST did, so the object is light on black
    crop = np.clip((crop - background) / (1.0 - background), 0, 1)  # the background at 0
    h, w = crop.shape
    scale = FIELD / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(crop.astype(np.float32)).resize((new_w, new_h), Image.LANCZOS))
    resized = np.clip(unsharp_mask(np.clip(resized, 0, 1), radius=1.0, amount=1.0), 0, 1)
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    top, left = (FIELD - new_h) // 2, (FIELD - new_w) // 2
    field[top : top + new_h, left : left + new_w] = resized
    return field


def _without_specks(mask: np.ndarray) -> np.ndarray:
    """The mask less its connected parts much smaller than the largest (dust, a speck, noise)."""
    from skimage.measure import label

    parts = label(mask, connectivity=2)
    areas = np.bincount(parts.ravel())
    areas[0] = 0
    return np.isin(parts, np.nonzero(areas >= KEEP_FRACTION * areas.max())[0])


def load_product(path: str | Path) -> np.ndarray:
    """The whole pipeline for a product photo: a 28×28 float32 array in [0, 1], the object light on black."""
    return product_photo(to_gray(read_image(path)))


def load_image(path: str | Path, framing: str = "digit") -> np.ndarray:
    """One file framed as the dataset frames its images (``framing``: one of ``FRAMINGS``)."""
    if framing == "product":
        return load_product(path)
    if framing == "digit":
        return load_digit(path)
    raise ValueError(f"unknown framing {framing!r}; one of {', '.join(FRAMINGS)}")
