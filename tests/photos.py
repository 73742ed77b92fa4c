"""Synthetic photographs of digits on paper, for the tests of predict's preparation: uneven light, grey paper,
grey pencil, sensor noise, a small tilt and JPEG compression."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photograph(ink: np.ndarray, rng: np.random.Generator, quality: int = 60, size: int = 360) -> Image.Image:
    """``ink``: light-on-dark digit in [0, 1] (any size). Returns an RGB JPEG-compressed photo of it drawn in
    grey pencil on grey paper under uneven light."""
    h = int(size * rng.uniform(0.45, 0.6))
    w = max(1, round(h * ink.shape[1] / ink.shape[0]))  # the digit keeps its aspect ratio
    digit = Image.fromarray((ink * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    canvas = np.zeros((size, int(size * 1.2)), dtype=np.float64)
    top = int(rng.uniform(0.15, 0.35) * size)
    left = int(rng.uniform(0.2, 0.45) * canvas.shape[1])
    canvas[top : top + h, left : left + w] = np.asarray(digit, dtype=np.float64) / 255
    tilted = Image.fromarray((canvas * 255).astype(np.uint8)).rotate(rng.uniform(-6, 6), Image.BILINEAR)
    strokes = np.asarray(tilted, dtype=np.float64) / 255
    paper, pencil = rng.uniform(0.62, 0.78), rng.uniform(0.25, 0.4)
    image = paper - (paper - pencil) * strokes
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] / max(image.shape)
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.55 + 0.55 * (0.5 + 0.5 * (np.cos(angle) * xx + np.sin(angle) * yy))  # one side in shade
    image = image * light + rng.normal(0, 0.035, image.shape)
    rgb = np.clip(np.stack([image * 1.02, image, image * 0.95], axis=-1), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
