"""Digits that are not MNIST's, for the tests of predict's preparation: the ten digits in handwriting fonts
from Debian's archive, from a thin pen to a fat marker, filling 20% to 95% of the frame, on plain, lined and
squared paper, dark ink on light paper as a scan; and MNIST's own test digits made bolder.

The fonts are Debian packages (``make fonts`` installs them where apt-get works); ``font_files()`` lists those
present, and the tests that need them skip, saying so, where there are none."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# the Debian packages and the font files they hold (one regular face each, and a bold one where there is);
# fonts-femkeklaver is left out: its digits are sketched outlines (a slashed, hollow zero), not strokes
FONT_PACKAGES = {
    "fonts-dkg-handwriting": [
        "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
        "/usr/share/fonts/truetype/fifthhorseman/dkgBd.ttf",
    ],
    "fonts-breip": ["/usr/share/fonts/truetype/breip/Breip.ttf"],
    "fonts-bwht": [
        "/usr/share/fonts/opentype/bwht/BecauseWeBuild-Regular.otf",
        "/usr/share/fonts/opentype/bwht/BecauseWeLearn-Regular.otf",
    ],
    "fonts-humor-sans": ["/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf"],
    "fonts-klee": [
        "/usr/share/fonts/truetype/klee/KleeOne-Regular.ttf",
        "/usr/share/fonts/truetype/klee/KleeOne-SemiBold.ttf",
    ],
    "fonts-rufscript": ["/usr/share/fonts/truetype/rufscript/Rufscript010.ttf"],
    "fonts-comic-neue": [
        "/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf",
        "/usr/share/fonts/opentype/comic-neue/ComicNeue-Bold.otf",
    ],
}
FONTS_MISSING = (
    "no handwriting fonts from Debian's archive here (fonts-dkg-handwriting, fonts-klee, ...): `make fonts` "
    "installs them where apt-get works, as root; CI runs these tests"
)

GLYPH_PX = 160  # a digit's height when drawn, before it is thickened and framed
WIDTHS = {
    "pen": 0,
    "felt": 3,
    "marker": 7,
    "fat marker": 12,
}  # dilation radius in px at GLYPH_PX (strokes 2r wider)
FILLS = (0.2, 0.5, 0.8, 0.95)  # the digit's longer side as a fraction of the frame's shorter side
PAPERS = ("plain", "lined", "squared")
FRAME = (300, 260)  # h, w of a scan


def font_files() -> list[Path]:
    """The handwriting font files installed here."""
    return [Path(p) for files in FONT_PACKAGES.values() for p in files if Path(p).is_file()]


def glyph(font: Path, digit: int) -> np.ndarray:
    """The digit in this font as light ink on black, cropped to its ink, GLYPH_PX high."""
    face = ImageFont.truetype(str(font), size=GLYPH_PX)
    canvas = Image.new("L", (GLYPH_PX * 2, GLYPH_PX * 2), 0)
    ImageDraw.Draw(canvas).text((GLYPH_PX // 2, GLYPH_PX // 4), str(digit), fill=255, font=face)
    ink = np.asarray(canvas, dtype=np.float64) / 255
    rows, cols = np.nonzero(ink > 0.1)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = GLYPH_PX / ink.shape[0]
    size = (max(1, round(ink.shape[1] * scale)), GLYPH_PX)
    return np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS)) / 255.0


def thicken(ink: np.ndarray, radius: float) -> np.ndarray:
    """The strokes widened by ``2 * radius`` px (a grey dilation by a disk), as a fatter pen."""
    from scipy.ndimage import grey_dilation

    if radius <= 0:
        return ink
    r = radius
    pad = int(np.ceil(r)) + 1
    yy, xx = np.mgrid[-pad : pad + 1, -pad : pad + 1]
    footprint = xx**2 + yy**2 <= r**2
    padded = np.pad(ink, pad)
    return grey_dilation(padded, footprint=footprint)


def scan(ink: np.ndarray, fill: float, paper: str, rng: np.random.Generator) -> np.ndarray:
    """A scan of the ink (light on black, any size) written on paper: dark ink on light paper, in [0, 1] (1 =
    white), FRAME in size, the ink's longer side ``fill`` of the frame's shorter side, lined or squared paper
    in a faint blue-grey."""
    h, w = FRAME
    side = fill * min(h, w)
    scale = side / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    digit = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS)) / 255.0
    canvas = np.zeros(FRAME)
    top = int(rng.uniform(0.1, 0.9) * (h - size[1])) if h > size[1] else 0
    left = int(rng.uniform(0.1, 0.9) * (w - size[0])) if w > size[0] else 0
    canvas[top : top + size[1], left : left + size[0]] = digit[: h - top, : w - left]
    page = np.full(FRAME, 0.96)
    if paper in ("lined", "squared"):
        step = int(rng.uniform(0.1, 0.14) * h)
        offset = int(rng.integers(0, step))
        page[offset::step, :] = 0.72
        if paper == "squared":
            page[:, offset::step] = 0.72
    ink_level = rng.uniform(0.05, 0.2)
    return np.clip(page - (page - ink_level) * canvas, 0, 1)


@dataclass(frozen=True)
class Sample:
    digit: int
    font: str
    width: str
    fill: float
    paper: str
    image: np.ndarray  # the scan, 1 = white


def font_set(per_kind: int | None = None, seed: int = 0) -> list[Sample]:
    """Every font x digit x width x fill x paper, or ``per_kind`` seeded draws of each (width, fill, paper)
    kind (fonts and digits drawn in turn), so a small set still covers every kind."""
    fonts = font_files()
    rng = np.random.default_rng(seed)
    glyphs: dict[tuple[Path, int], np.ndarray] = {}

    def drawn(font: Path, digit: int) -> np.ndarray:
        if (font, digit) not in glyphs:
            glyphs[font, digit] = glyph(font, digit)
        return glyphs[font, digit]

    samples = []
    for (width, extra), fill, paper in itertools.product(WIDTHS.items(), FILLS, PAPERS):
        if per_kind is None:
            pairs = list(itertools.product(fonts, range(10)))
        else:
            pairs = [
                (fonts[int(rng.integers(len(fonts)))], int(k % 10))
                for k in rng.permutation(per_kind * 10)[:per_kind]
            ]
        for font, digit in pairs:
            ink = thicken(drawn(font, digit), extra)
            samples.append(Sample(digit, font.stem, width, fill, paper, scan(ink, fill, paper, rng)))
    return samples


def bold_mnist(
    images: np.ndarray, labels: np.ndarray, radius: int, seed: int = 0
) -> list[tuple[int, np.ndarray]]:
    """MNIST digits (uint8, light on black, 28x28) dilated by ``radius`` px at 28 px (1 to 4), drawn at 8x so
    the dilation is smooth, and scanned dark on light paper filling 60% of the frame."""
    rng = np.random.default_rng(seed)
    out = []
    for image, label in zip(images, labels, strict=True):
        big = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC)) / 255.0
        out.append((int(label), scan(thicken(big, radius * 8), 0.6, "plain", rng)))
    return out


def number_row(
    inks: list[np.ndarray], gaps: list[float], rng: np.random.Generator, height: int = 120
) -> np.ndarray:
    """Digits (light-on-dark inks) written in a row: each scaled to ``height`` px high (times a little
    jitter), ``gaps[k]`` of the height apart (negative: the digits touch or overlap), a little up and down;
    scanned dark on light paper with a margin. Returns the scan, 1 = white."""
    digits = []
    for ink in inks:
        h = int(height * rng.uniform(0.9, 1.05))
        w = max(1, round(ink.shape[1] * h / ink.shape[0]))
        digits.append(
            np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize((w, h), Image.LANCZOS)) / 255.0
        )
    margin = height // 2
    lefts, x = [], margin
    for k, d in enumerate(digits):
        lefts.append(x)
        x += d.shape[1] + (int(gaps[k] * height) if k < len(gaps) else 0)
    canvas = np.zeros((height * 2 + margin, x + margin))
    for d, left in zip(digits, lefts, strict=True):
        top = margin // 2 + int(rng.uniform(0, height * 0.15))
        region = canvas[top : top + d.shape[0], left : left + d.shape[1]]
        np.maximum(region, d[: region.shape[0], : region.shape[1]], out=region)
    return np.clip(0.96 - 0.85 * canvas, 0, 1)


def font_rows(length: int, count: int, seed: int = 0, touching: float = 0.3) -> list[tuple[str, np.ndarray]]:
    """``count`` rows of ``length`` digits in the fonts (pen to marker), spaced 0.05 to 0.35 of a digit's
    height apart, a share ``touching`` of the gaps closed to touch (-0.03 to 0)."""
    fonts = font_files()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        font = fonts[int(rng.integers(len(fonts)))]
        radius = list(WIDTHS.values())[int(rng.integers(3))]
        digits = [int(d) for d in rng.integers(0, 10, length)]
        inks = [thicken(glyph(font, d), radius) for d in digits]
        gaps = [
            float(rng.uniform(-0.03, 0.0)) if rng.random() < touching else float(rng.uniform(0.05, 0.35))
            for _ in range(length - 1)
        ]
        rows.append(("".join(map(str, digits)), number_row(inks, gaps, rng)))
    return rows


def mnist_rows(
    images: np.ndarray, labels: np.ndarray, length: int, count: int, seed: int = 0, touching: float = 0.3
) -> list[tuple[str, np.ndarray]]:
    """Rows of MNIST test digits (cropped to their ink), spaced as ``font_rows``."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        pick = rng.choice(len(images), length, replace=False)
        inks = []
        for i in pick:
            big = np.asarray(Image.fromarray(images[i]).resize((112, 112), Image.BICUBIC)) / 255.0
            r, c = np.nonzero(big > 0.1)
            inks.append(big[r.min() : r.max() + 1, c.min() : c.max() + 1])
        gaps = [
            float(rng.uniform(-0.03, 0.0)) if rng.random() < touching else float(rng.uniform(0.05, 0.35))
            for _ in range(length - 1)
        ]
        rows.append(("".join(str(int(labels[i])) for i in pick), number_row(inks, gaps, rng)))
    return rows
