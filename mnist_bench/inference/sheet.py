"""``predict --sheet FILE.png``: what the model saw, at a glance. One tile per input file: the file as given,
the prepared 28x28 image the model read, the prediction and its confidence; an uncertain prediction is framed
in orange and marked '?', a file that failed shows its reason in red."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_bench.inference.images import ImageError, read_image, to_gray

THUMB = 112  # px, the input's and the prepared image's side in a tile
COLUMNS = 4
TEXT_H = 58
PAD = 8
UNCERTAIN = (230, 120, 0)
FAILED = (200, 0, 0)
BOX_COLOUR = (0, 150, 255)  # --number: each digit's box


def _thumbnail(path: Path, boxes: list | None = None) -> Image.Image:
    """The input file as the user sees it (grayscale, transparency over white), fitted in THUMB x THUMB, with
    ``boxes`` (left, top, right, bottom as shares of the image) drawn in."""
    try:
        gray = to_gray(read_image(path))
    except (ImageError, OSError):
        return Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
    img = Image.fromarray(np.rint(gray * 255).astype(np.uint8)).convert("RGB")
    img.thumbnail((THUMB, THUMB), Image.LANCZOS)
    draw = ImageDraw.Draw(img)
    for left, top, right, bottom in boxes or []:
        draw.rectangle(
            (left * img.width, top * img.height, right * img.width - 1, bottom * img.height - 1),
            outline=BOX_COLOUR,
        )
    tile = Image.new("RGB", (THUMB, THUMB), "white")
    tile.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
    return tile


def contact_sheet(rows: list, path: Path) -> None:
    """Writes the sheet of ``rows`` (``predict.Prediction``s, with their ``prepared`` images) to ``path``
    (PNG)."""
    font = ImageFont.load_default()
    tile_w, tile_h = 2 * THUMB + 3 * PAD, THUMB + TEXT_H + 2 * PAD
    n_rows = max(1, -(-len(rows) // COLUMNS))
    sheet = Image.new("RGB", (min(len(rows), COLUMNS) * tile_w or tile_w, n_rows * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(rows):
        x, y = (k % COLUMNS) * tile_w, (k // COLUMNS) * tile_h
        boxes = [box for _, _, box in row.digits] if row.digits else None
        sheet.paste(_thumbnail(Path(row.file), boxes), (x + PAD, y + PAD))
        if row.prepared is not None:  # a number's digits side by side, scaled to fit
            h, w = row.prepared.shape
            scale = THUMB / max(h, w)
            seen = Image.fromarray(np.rint(row.prepared * 255).astype(np.uint8)).resize(
                (max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST
            )
            sheet.paste(seen.convert("RGB"), (x + 2 * PAD + THUMB, y + PAD + (THUMB - seen.height) // 2))
        name = Path(row.file).name
        name = name if len(name) <= 38 else name[:35] + "..."
        text_y = y + PAD + THUMB + 4
        draw.text((x + PAD, text_y), visible_name(name), fill="black", font=font)
        if row.error is not None:
            reason = textwrap.wrap(f"failed: {visible_name(row.error)}", 42)[:3]
            draw.multiline_text((x + PAD, text_y + 14), "\n".join(reason), fill=FAILED, font=font)
            draw.rectangle((x + 2, y + 2, x + tile_w - 3, y + tile_h - 3), outline=FAILED, width=2)
            continue
        mark = "?  uncertain" if row.uncertain else ""
        label = (
            row.label if len(row.label) <= 24 else row.label[:21] + "..."
        )  # a long number stays in its tile
        draw.text(
            (x + PAD, text_y + 14),
            f"{label}  {row.confidence:.3f} {mark}",
            fill=UNCERTAIN if row.uncertain else "black",
            font=font,
        )
        label = "digits" if row.digits is not None else "top-3"
        draw.text((x + PAD, text_y + 28), f"{label} {row.top3_text()}"[:44], fill=(90, 90, 90), font=font)
        if row.uncertain:
            draw.rectangle((x + 2, y + 2, x + tile_w - 3, y + tile_h - 3), outline=UNCERTAIN, width=3)
    sheet.save(path, format="PNG")


def visible_name(text: str) -> str:
    """Control characters shown as escapes, and characters the default font lacks as '?'."""
    shown = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return shown.encode("latin-1", errors="replace").decode("latin-1")
