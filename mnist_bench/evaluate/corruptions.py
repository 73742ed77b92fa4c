"""The 15 corruptions of MNIST-C (Mu and Gilmer 2019, "MNIST-C: A Robustness Benchmark for Computer Vision";
code: github.com/google-research/mnist-c, ``corruptions.py``), regenerated on the fly.

Each corruption follows the published code's definition with the one severity that code fixes for the released
set (the default ``severity`` of each function there), so the images are drawn from the same distribution as
the released MNIST-C test set; they are regenerated with this module's own random numbers, not byte-identical
copies. Where the original's method cannot be reproduced without its dependencies, the method here differs:

* ``motion_blur``: ImageMagick's ``MagickMotionBlurImage`` (through Wand) is replaced by the same one-sided
  Gaussian line kernel (21 taps, sigma 3, rounded tap offsets, edge pixels repeated) convolved with numpy; the
  original also rounded its output to 8 bits through a PNG round trip, which is not done here.
* ``fog``: the same diamond-square plasma fractal (256×256 map, the original's wibble-squared noise, top-left
  28×28 crop) written anew and batched, drawing its noise in its own order.
* ``glass_blur``: the same sequential local pixel swaps, done for all images at once with numpy index arrays.

The others (shot and impulse noise, the four affine warps, brightness, stripe, spatter, dotted line, zigzag
and Canny edges) compute the original's formulas; the affine warps use the matrices of scikit-image's
``AffineTransform`` as it was in 2019 (its ``shear`` has since changed meaning) and bilinear sampling with
black outside, as ``skimage.transform.warp`` did. Two quirks of the original are kept on purpose, since the
released set has them: glass blur's Gaussian runs down the columns only (``gaussian(..., multichannel=True)``
on a 2-D image took the last axis for channels), and brightness on a grey image is a plain +0.5 (the HSV value
shift reduces to it).

Images come and go as N×28×28 float32 in [0, 1] (white digit on black); MNIST-C's [0, 255] scale is used
inside where it matters (glass blur's 8-bit step). Image i's randomness comes from
``np.random.default_rng([seed, CORRUPTION_ID[name], index[i]])``, so a test image is corrupted the same way in
any subset that holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage import feature

CORRUPTIONS: tuple[str, ...] = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)

# the position in MNIST-C's own CORRUPTIONS list, where 0 is 'identity'
CORRUPTION_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(CORRUPTIONS)}

SEVERITY: dict[str, str] = {
    "shot_noise": "Poisson, 3 photons per unit intensity (severity 5 of 5)",
    "impulse_noise": "salt and pepper on 17% of pixels, half each (severity 4)",
    "glass_blur": (
        "Gaussian sigma 0.7 down the columns, 2 passes of swaps with a neighbour up to 1 px up/left, "
        "Gaussian sigma 0.7 again (severity 1)"
    ),
    "motion_blur": (
        "one-sided Gaussian line kernel, radius 10 px, sigma 3 px, angle uniform in ±45° (severity 1)"
    ),
    "shear": "shear of ±0.4 rad about the centre (severity 2)",
    "scale": "zoom out to 0.7 of the size about the centre (severity 3)",
    "rotate": "±0.4 rad (±22.9°) about the centre (severity 2)",
    "brightness": "HSV value +0.5 (severity 5)",
    "translate": "±3 px horizontally and ±3 px vertically (severity 3)",
    "stripe": "columns 0-6 and 21-27 inverted",
    "fog": "plasma fractal of amplitude 3, wibble decay 1.4, contrast scaled by max/(max+3) (severity 5)",
    "spatter": (
        "mud of intensity 63/255: N(0.65, 0.3) noise blurred sigma 1 above 0.65, "
        "mask blurred sigma 1.5 kept from 0.8 (severity 4)"
    ),
    "dotted_line": "one 2-px-dashed line from column 0 to 27, rows at both ends uniform in 0-26",
    "zigzag": (
        "zigzag of 2 px amplitude and 4 px period from column 2 to 25, start row 0-26, tilt -5 to +4 rows"
    ),
    "canny_edges": "Canny edges, sigma 1, hysteresis thresholds 0.1 and 0.2",
}

SIZE = 28
CENTRE = (SIZE - 1) / 2  # 13.5: the affine warps keep it fixed

Batch = np.ndarray  # N×28×28 float64 in [0, 1]


# ---------------------------------------------------------------------------------------------------- helpers


def _signs(rngs: Sequence[np.random.Generator], k: int = 1) -> np.ndarray:
    """Per image k random signs (±1), as MNIST-C's ``np.random.choice([-1, 1], k)``; N×k."""
    return np.array([rng.choice([-1, 1], k) for rng in rngs], dtype=np.float64).reshape(len(rngs), k)


def _centred(linear: np.ndarray) -> np.ndarray:
    """N×2×3 inverse maps (output (col, row) to input (col, row)) with the linear parts given (N×2×2) and the
    translation that keeps the centre (13.5, 13.5) fixed, as MNIST-C computes ``a3, b3``."""
    shift = CENTRE * (1 - linear.sum(axis=2))
    return np.concatenate([linear, shift[:, :, None]], axis=2)


def _warp(x: Batch, maps: np.ndarray) -> Batch:
    """Bilinear inverse warp with black outside, as ``skimage.transform.warp(order=1, mode='constant')``.
    ``maps``: N×2×3, (col, row, 1) of an output pixel to (col, row) in the input."""
    n = len(x)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    m = maps[:, :, :, None, None]
    src_c = m[:, 0, 0] * cols + m[:, 0, 1] * rows + m[:, 0, 2]
    src_r = m[:, 1, 0] * cols + m[:, 1, 1] * rows + m[:, 1, 2]
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))  # two black pixels round: far-off samples read only black
    c0, r0 = np.floor(src_c), np.floor(src_r)
    fc, fr = src_c - c0, src_r - r0
    ci = np.clip(c0.astype(np.int64) + 2, 0, SIZE + 2)
    ri = np.clip(r0.astype(np.int64) + 2, 0, SIZE + 2)
    k = np.arange(n)[:, None, None]
    top = (1 - fc) * padded[k, ri, ci] + fc * padded[k, ri, ci + 1]
    bottom = (1 - fc) * padded[k, ri + 1, ci] + fc * padded[k, ri + 1, ci + 1]
    return (1 - fr) * top + fr * bottom


def _line(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """MNIST-C's ``line_from_points``: the line through (c0, r0) and (c1, r1), intensity log(1 - d/2.3) + 1 at
    vertical distance d (so about 3 px thick), kept in columns floor(c0) to ceil(c1) - 1."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE))
    cc = np.arange(SIZE, dtype=np.float64)[None, :]
    rr = np.arange(SIZE, dtype=np.float64)[:, None]
    slope = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rr - (slope * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    line[:, : max(int(np.floor(c0)), 0)] = 0
    line[:, max(int(np.ceil(c1)), 0) :] = 0
    return line


def _plasma_fractal(uniforms: np.ndarray, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height maps in [0, 1], one per row of ``uniforms`` (n × (mapsize² - 1) draws in [0, 1)),
    the algorithm of MNIST-C's ``plasma_fractal`` including its noise of wibble × U(-wibble, wibble)."""
    n = len(uniforms)
    maps = np.zeros((n, mapsize, mapsize))
    used = 0
    wibble = 100.0
    step = mapsize

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        nonlocal used
        size = total.shape[1] * total.shape[2]
        u = uniforms[:, used : used + size].reshape(total.shape)
        used += size
        return total / 4 + wibble * wibble * (2 * u - 1)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:mapsize:step, 0:mapsize:step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        maps[:, half:mapsize:step, half:mapsize:step] = noisy_mean(squares)
        centres = maps[:, half:mapsize:step, half:mapsize:step]
        corners = maps[:, 0:mapsize:step, 0:mapsize:step]
        maps[:, 0:mapsize:step, half:mapsize:step] = noisy_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        )
        maps[:, half:mapsize:step, 0:mapsize:step] = noisy_mean(
            centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        )
        step //= 2
        wibble /= wibbledecay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


# ----------------------------------------------------------------------------------------------------
# corruptions


def _shot_noise(x: Batch, rngs) -> Batch:
    photons = 3.0
    return np.stack([rng.poisson(xi * photons) for xi, rng in zip(x, rngs, strict=True)]) / photons


def _impulse_noise(x: Batch, rngs) -> Batch:
    amount, salt_share = 0.17, 0.5  # skimage's random_noise(mode='s&p'): each pixel flipped with p = amount
    for xi, rng in zip(x, rngs, strict=True):
        flipped = rng.random(xi.shape) < amount
        salted = rng.random(xi.shape) < salt_share
        xi[flipped & salted] = 1.0
        xi[flipped & ~salted] = 0.0
    return x


def _glass_blur(x: Batch, rngs) -> Batch:
    sigma, delta, passes = 0.7, 1, 2

    def blur(a: np.ndarray) -> np.ndarray:  # down the columns only, as the original's multichannel=True did
        return ndimage.gaussian_filter1d(a, sigma, axis=1, mode="nearest", truncate=4.0)

    n = len(x)
    pixels = np.clip(np.floor(blur(x) * 255), 0, 255).reshape(n, SIZE * SIZE)  # np.uint8(...) truncates
    spots = np.arange(SIZE - delta, delta, -1)  # rows and columns 27 down to 2, bottom right first
    k = len(spots)
    swap = np.stack([rng.random((passes, k, k)) < 0.5 for rng in rngs])
    # the original's randint(-delta, delta): high excluded, so offsets -1 or 0 (dx, dy)
    offsets = np.stack([rng.integers(-delta, delta, size=(passes, k, k, 2)) for rng in rngs])
    # the swaps stay sequential (a pixel can move again later in the pass), each done for all images at once
    for p in range(passes):
        for a, h in enumerate(spots):
            for b, w in enumerate(spots):
                who = np.flatnonzero(swap[:, p, a, b])
                if who.size == 0:
                    continue
                here = h * SIZE + w
                there = (h + offsets[who, p, a, b, 1]) * SIZE + (w + offsets[who, p, a, b, 0])
                mine, theirs = pixels[who, here], pixels[who, there]
                pixels[who, here] = theirs
                pixels[who, there] = mine
    return blur(pixels.reshape(n, SIZE, SIZE) / 255)


def _motion_blur(x: Batch, rngs) -> Batch:
    # differs: ImageMagick's MotionBlurImage (via Wand, 8-bit PNG round trip) done as its line kernel with
    # numpy
    radius, sigma = 10, 3.0
    taps = np.arange(2 * int(np.ceil(radius)) + 1)  # ImageMagick's GetOptimalKernelWidth1D: 21 taps
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    angles = np.deg2rad([rng.uniform(-45, 45) for rng in rngs])
    # tap i samples the pixel i steps along the angle (rounded as ImageMagick's ceil(v - 0.5)): a one-sided
    # trail
    dc = np.ceil(taps[None, :] * np.cos(angles)[:, None] - 0.5).astype(np.int64)
    dr = np.ceil(taps[None, :] * np.sin(angles)[:, None] - 0.5).astype(np.int64)
    grid = np.arange(SIZE)
    out = np.empty_like(x)
    for s in range(0, len(x), 128):
        e = min(s + 128, len(x))
        rows = np.clip(
            grid[None, None, :, None] + dr[s:e, :, None, None], 0, SIZE - 1
        )  # edge pixels repeated
        cols = np.clip(grid[None, None, None, :] + dc[s:e, :, None, None], 0, SIZE - 1)
        samples = x[np.arange(s, e)[:, None, None, None], rows, cols]
        out[s:e] = np.tensordot(samples, kernel, axes=([1], [0]))
    return out


def _shear(x: Batch, rngs) -> Batch:
    s = 0.4 * _signs(rngs)[:, 0]
    # skimage's AffineTransform(shear=s) of 2019: [[1, -sin s], [0, cos s]] (now [[1, -tan s], [0, 1]])
    linear = np.zeros((len(x), 2, 2))
    linear[:, 0, 0] = 1.0
    linear[:, 0, 1] = -np.sin(s)
    linear[:, 1, 1] = np.cos(s)
    return _warp(x, _centred(linear))


def _scale(x: Batch, rngs) -> Batch:
    factor = 0.7  # the inverse map scales by 1/0.7: the digit shrinks to 0.7 of its size
    linear = np.broadcast_to(np.eye(2) / factor, (len(x), 2, 2))
    return _warp(x, _centred(linear))


def _rotate(x: Batch, rngs) -> Batch:
    angle = 0.4 * _signs(rngs)[:, 0]
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.stack([np.stack([cos, -sin], axis=1), np.stack([sin, cos], axis=1)], axis=1)
    return _warp(x, _centred(linear))


def _brightness(x: Batch, rngs) -> Batch:
    # grey -> RGB -> HSV, value + 0.5 (clipped), and back to grey: for a grey pixel that is exactly this
    return np.clip(x + 0.5, 0, 1)


def _translate(x: Batch, rngs) -> Batch:
    shift = 3.0 * _signs(rngs, 2)  # (dx, dy) of the inverse map: the digit moves by (-dx, -dy)
    maps = np.zeros((len(x), 2, 3))
    maps[:, 0, 0] = maps[:, 1, 1] = 1.0
    maps[:, :, 2] = shift
    return _warp(x, maps)


def _stripe(x: Batch, rngs) -> Batch:
    x[:, :, :7] = 1 - x[:, :, :7]
    x[:, :, 21:] = 1 - x[:, :, 21:]
    return x


def _fog(x: Batch, rngs) -> Batch:
    # differs: the plasma fractal is this module's batched diamond-square, with its own order of random draws
    amplitude, wibbledecay, mapsize = 3.0, 1.4, 256
    out = np.empty_like(x)
    for s in range(0, len(x), 64):
        e = min(s + 64, len(x))
        uniforms = np.stack([rng.random(mapsize * mapsize - 1) for rng in rngs[s:e]])
        fog = _plasma_fractal(uniforms, mapsize, wibbledecay)[:, :SIZE, :SIZE]
        peak = x[s:e].max(axis=(1, 2), keepdims=True)
        out[s:e] = (x[s:e] + amplitude * fog) * peak / (peak + amplitude)
    return out


def _spatter(x: Batch, rngs) -> Batch:
    loc, scale, sigma, threshold, mask_sigma = 0.65, 0.3, 1.0, 0.65, 1.5
    liquid = np.stack([rng.normal(loc, scale, size=(SIZE, SIZE)) for rng in rngs])
    liquid = ndimage.gaussian_filter(liquid, (0, sigma, sigma), mode="nearest", truncate=4.0)
    liquid[liquid < threshold] = 0
    mask = ndimage.gaussian_filter(
        (liquid > threshold).astype(np.float64), (0, mask_sigma, mask_sigma), mode="nearest", truncate=4.0
    )
    mask[mask < 0.8] = 0
    return x * (1 - mask) + 63 / 255 * mask  # mud of grey 63


def _dotted_line(x: Batch, rngs) -> Batch:
    edges = np.arange(0, 30, 2)
    gaps = np.zeros(SIZE, dtype=bool)  # columns 0-1, 4-5, ..., 24-25 blanked: dashes of 2 px from column 2
    for i in range(1, len(edges), 2):
        gaps[edges[i - 1] : edges[i]] = True
    for xi, rng in zip(x, rngs, strict=True):
        r0, r1 = rng.integers(0, 27, size=2)
        line = _line(0, r0, 27, r1)
        line[:, gaps] = 0
        xi += line
    return x


def _zigzag(x: Batch, rngs) -> Batch:
    a = b = 2.0  # length and width of the zigzag's teeth
    c0, c1 = 2, 25
    for xi, rng in zip(x, rngs, strict=True):
        r0 = int(rng.integers(0, 27))
        r1 = r0 + int(rng.integers(-5, 5))
        theta = np.arctan((r1 - r0) / (c1 - c0))
        length = (c1 - c0) / np.cos(theta)
        points = [(0.0, 0.0)]
        r_i = 0.0
        for i in range(int((length - a) // (2 * a)) + 1):
            r_i = (-1) ** i * b
            points.append(((2 * i + 1) * a, r_i))
        last_full = (2 * a) * (length // (2 * a))
        if length != last_full:
            points.append(
                (length, r_i / (2 * (length - last_full)))
            )  # the original's formula for the last tip
        pts = np.array(points).T
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        cs, rs = rotation @ pts
        cs, rs = cs + c0, rs + r0
        for i in range(1, len(cs)):
            xi += _line(cs[i - 1], rs[i - 1], cs[i], rs[i])
            np.clip(xi, 0, 1, out=xi)
    return x


def _canny_edges(x: Batch, rngs) -> Batch:
    return np.stack([feature.canny(xi, sigma=1.0) for xi in x]).astype(np.float64)


# name -> (function, whether it draws random numbers)
_FUNCTIONS: dict[str, tuple[Callable[[Batch, list | None], Batch], bool]] = {
    "shot_noise": (_shot_noise, True),
    "impulse_noise": (_impulse_noise, True),
    "glass_blur": (_glass_blur, True),
    "motion_blur": (_motion_blur, True),
    "shear": (_shear, True),
    "scale": (_scale, False),
    "rotate": (_rotate, True),
    "brightness": (_brightness, False),
    "translate": (_translate, True),
    "stripe": (_stripe, False),
    "fog": (_fog, True),
    "spatter": (_spatter, True),
    "dotted_line": (_dotted_line, True),
    "zigzag": (_zigzag, True),
    "canny_edges": (_canny_edges, False),
}
assert tuple(_FUNCTIONS) == CORRUPTIONS


# ----------------------------------------------------------------------------------------------------
# interface


def _check(images: np.ndarray, seed: int, index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images)
    if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"images must be N×{SIZE}×{SIZE}, got shape {x.shape}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if index is None:
        idx = np.arange(len(x))
    else:
        idx = np.asarray(index)
        if idx.shape != (len(x),) or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(
                f"index must be {len(x)} integers (one per image), got shape {idx.shape} of {idx.dtype}"
            )
        if idx.size and idx.min() < 0:
            raise ValueError("index must be non-negative (positions in the test set)")
    return x, idx


def corrupt(images: np.ndarray, name: str, seed: int = 0, index: np.ndarray | None = None) -> np.ndarray:
    """images: N×28×28 float32 in [0, 1] (white digit on black, as MNIST). Returns a new N×28×28 float32 array
    in [0, 1]. Deterministic: image i gets its randomness from np.random.default_rng([seed,
    CORRUPTION_ID[name], index[i]]), where index defaults to arange(N) (the image's position in the test set),
    so the same test image is corrupted the same way whatever subset it is in. Raises ValueError naming the
    corruption and the known ones for an unknown name."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {', '.join(CORRUPTIONS)}")
    x, idx = _check(images, seed, index)
    if len(x) == 0:
        return np.zeros((0, SIZE, SIZE), dtype=np.float32)
    function, random = _FUNCTIONS[name]
    rngs = [np.random.default_rng([int(seed), CORRUPTION_ID[name], int(i)]) for i in idx] if random else None
    out = function(
        np.array(x, dtype=np.float64), rngs
    )  # a private copy: the caller's images stay as they were
    return np.clip(out, 0, 1).astype(np.float32)


def corrupt_all(images: np.ndarray, seed: int = 0, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every corruption of ``images`` (see ``corrupt``), in the order of ``CORRUPTIONS``."""
    return {name: corrupt(images, name, seed, index) for name in CORRUPTIONS}
