"""``mnist-bench predict``: the user's own image files classified by any trained checkpoint.

    mnist-bench predict --ckpt_path lightning_logs/cnn/version_0 my_digits/ seven.png [--csv predictions.csv]
        [--sheet sheet.png] [--uncertain_below 0.7]

Each file is framed as the model's dataset framed its images (``mnist_bench.inference.images``: an MNIST
digit, a Fashion-MNIST garment) and classified. A file that can't be read gets an
error row; the others are still predicted. A prediction whose confidence is below ``--uncertain_below`` is
marked uncertain in the table, the CSV and the contact sheet. Exit code 0 when every file was predicted, 1
when any failed, 2 for bad arguments or checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mnist_bench.allowlist import ALLOW_IMPORTS_FLAG, ALLOW_IMPORTS_HELP, allowed_packages
from mnist_bench.errors import ConfigError, UserFacingError
from mnist_bench.inference.checkpoints import class_probabilities, load_trained, resolve_checkpoint
from mnist_bench.inference.images import ImageError, load_image
from mnist_bench.inference.outputs import (
    NEVER_REPLACED,
    OVERWRITE_FLAG,
    OVERWRITE_HELP,
    file_in_the_way,
    owned,
)
from mnist_bench.utils import write_text_atomic

BATCH = 256
UNCERTAIN_BELOW = 0.7  # a prediction less confident than this is marked uncertain (--uncertain_below)


@dataclass
class Prediction:
    file: str
    label: str | None = None  # the predicted class's name (for MNIST, the digit)
    confidence: float | None = None
    top3: list[tuple[str, float]] | None = None
    error: str | None = None
    uncertain: bool = False  # confidence below the --uncertain_below threshold
    prepared: np.ndarray | None = field(default=None, repr=False, compare=False)  # what the model saw (28x28)
    # --number: each digit's class, confidence and box (left, top, right, bottom, as shares of the image's
    # size)
    digits: list[tuple[str, float, tuple[float, float, float, float]]] | None = None

    def top3_text(self) -> str:
        if self.digits is not None:  # a number: each digit's confidence instead
            return " ".join(f"{d}:{p:.3f}" for d, p, _ in self.digits)
        return " ".join(f"{d}:{p:.3f}" for d, p in self.top3 or [])


def image_files(inputs: list[str]) -> list[Path]:
    """Files as given, and the image files in given folders (recursively, by Pillow's extensions), sorted."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        else:
            files.append(path)  # a missing or unreadable file becomes an error row
    return files


def read_number(
    model: torch.nn.Module, path: Path, device: torch.device, row: Prediction, uncertain_below: float
) -> np.ndarray:
    """``path`` read as a row of digits into ``row`` (the string, the lowest digit confidence, each digit's
    class, confidence and box); returns the digits' 28x28 images side by side."""
    from mnist_bench.inference.images import read_image, to_gray
    from mnist_bench.inference.number import segment, too_wide

    def probabilities(images: list[np.ndarray]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack(images))[:, None].to(device)
        return class_probabilities(model, model.dataset.normalize(pixels)).cpu()

    gray = to_gray(read_image(path))
    digits = segment(gray, lambda images: probabilities(images).max(dim=1).values.numpy())
    values, classes = probabilities([d.image for d in digits]).max(dim=1)
    names = [model.dataset.class_names[k] for k in classes.tolist()]
    row.digits = [(name, v, d.share) for name, v, d in zip(names, values.tolist(), digits, strict=True)]
    row.label, row.confidence = "".join(names), min(values.tolist())
    row.uncertain = row.confidence < uncertain_below or too_wide(digits)
    return np.concatenate([d.image for d in digits], axis=1)


def predict_files(
    model: torch.nn.Module,
    files: list[Path],
    device: torch.device,
    save_prepared: Path | None = None,
    uncertain_below: float = UNCERTAIN_BELOW,
    keep_prepared: bool = False,
    number: bool = False,
) -> list[Prediction]:
    """One row per file: its class (with ``number``, the row of digits it holds, as a string) or its error."""
    rows: list[Prediction] = []
    ready: list[tuple[Prediction, np.ndarray]] = []
    for path, name in zip(files, prepared_names(files), strict=True):
        row = Prediction(str(path))
        rows.append(row)
        if not path.is_file():
            row.error = "no such file"
            continue
        try:
            image = (
                read_number(model, path, device, row, uncertain_below)
                if number
                else load_image(path, model.dataset.framing)
            )
        except ImageError as err:
            row.error = str(err)
            continue
        if not number:
            ready.append((row, image))
        if keep_prepared:
            row.prepared = image
        if save_prepared is not None:
            Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(save_prepared / name)
    for start in range(0, len(ready), BATCH):
        chunk = ready[start : start + BATCH]
        pixels = torch.from_numpy(np.stack([image for _, image in chunk]))[:, None].to(device)
        probs = class_probabilities(model, model.dataset.normalize(pixels)).cpu()
        values, classes = probs.topk(3, dim=1)
        for (row, _), v, c in zip(chunk, values.tolist(), classes.tolist(), strict=True):
            names = [model.dataset.class_names[k] for k in c]
            row.label, row.confidence, row.top3 = names[0], v[0], list(zip(names, v, strict=True))
            row.uncertain = v[0] < uncertain_below
    return rows


def prepared_names(files: list[Path]) -> list[str]:
    """The name of each file's prepared image in --save_prepared, decided before any is read: a.png and
    b/a.jpg give a.png and a-2.png."""
    names: list[str] = []
    for path in files:
        stem = _fit_name(path.stem)
        name, k = f"{stem}.png", 1
        while name in names:
            k += 1
            name = f"{stem}-{k}.png"
        names.append(name)
    return names


def _fit_name(stem: str, most: int = 200) -> str:
    """The stem cut to at most ``most`` bytes (a file name may hold 255), so that a suffix still fits."""
    data = stem.encode()
    return stem if len(data) <= most else data[:most].decode(errors="ignore")


def output_refusal(
    csv_path: Path | None,
    prepared: Path | None,
    files: list[Path],
    checkpoint: Path,
    overwrite: bool,
    sheet: Path | None = None,
) -> str | None:
    """Why the CSV, the contact sheet or the prepared images may not be written: an input or the checkpoint
    never is, another existing file only with --overwrite. Checked before any prediction is made."""
    images = [prepared / name for name in prepared_names(files)] if prepared is not None else []
    outputs = [(flag, path) for flag, path in (("--csv", csv_path), ("--sheet", sheet)) if path is not None]
    if len(outputs) == 2 and csv_path.resolve() == sheet.resolve():
        return f"--csv and --sheet are both {csv_path}. Fix: another file for one of them"
    for flag, path in outputs:
        if (reason := owned(path, files, checkpoint)) is not None:
            return f"{flag} {path} {reason}, and {NEVER_REPLACED}. Fix: another {flag} file"
        if path.resolve() in {image.resolve() for image in images}:
            return f"{flag} {path} is also one of the --save_prepared images. Fix: another {flag} file"
        if path.exists() and not overwrite:
            return f"{flag} {path} exists. Fix: {OVERWRITE_FLAG} to replace it, or another {flag} file"
    for image in images:
        if (reason := owned(image, files, checkpoint)) is not None:
            return (
                f"--save_prepared {prepared} would write {image}, which {reason}, and {NEVER_REPLACED}. "
                "Fix: --save_prepared a folder of its own, e.g. prepared"
            )
        if image.is_symlink() or image.is_dir():
            kind = "a link (writing would change the file it leads to)" if image.is_symlink() else "a folder"
            return (
                f"--save_prepared {prepared} would write {image}, which is {kind}; --overwrite replaces only "
                "plain files. Fix: move it away, or another --save_prepared folder"
            )
    existing = [image for image in images if image.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the images it would write)" if len(existing) > 1 else ""
        return (
            f"--save_prepared {prepared} already holds {existing[0].name}{more}. Fix: {OVERWRITE_FLAG} "
            f"to replace {'them' if more else 'it'}, or another --save_prepared folder"
        )
    return None


def device_refusal(name: str) -> str | None:
    """Why predict cannot run on ``--device name``, or None; checked before the checkpoint is loaded."""
    try:
        device = torch.device(name)
    except RuntimeError:
        return "is not a device name"
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            return "needs a CUDA GPU, and this machine has none"
        if device.index is not None and device.index >= count:
            return f"is not one of this machine's {count} CUDA GPUs (cuda:0 to cuda:{count - 1})"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "needs Apple's MPS, which this machine lacks"
    return f"is not a device predict runs on ({device.type})"


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file, or None; checked before any prediction is made."""
    if path.is_dir():
        return "it is a folder"
    parent = path.parent
    if (blocker := file_in_the_way(path)) is not None:
        return f"{blocker} is a file, not a folder"
    if not parent.is_dir():
        return f"no folder {parent}"
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "no permission to write there"
    return None


def class_column(class_names: tuple[str, ...], number: bool = False) -> str:
    """The name of the predicted class's column: ``digit`` when the classes are the ten digits (as ever),
    ``class`` for any other dataset (garments, KMNIST's characters, a user's own), ``number`` for --number."""
    if number:
        return "number"
    return "digit" if tuple(class_names) == tuple(str(d) for d in range(10)) else "class"


def _top3_name(column: str) -> str:
    """The top-3 column, which for a number holds each digit's confidence instead (its confidence: the
    lowest)."""
    return "digit_confidences" if column == "number" else "top3"


def csv_text(rows: list[Prediction], column: str = "digit") -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", column, "confidence", _top3_name(column), "error", "uncertain"])
    for r in rows:
        writer.writerow(
            [
                r.file,
                r.label or "",
                "" if r.confidence is None else f"{r.confidence:.4f}",
                r.top3_text(),
                r.error or "",
                "yes" if r.uncertain else "",
            ]
        )
    return buf.getvalue()


def print_table(rows: list[Prediction], title: str, column: str = "digit") -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # every cell is plain Text: a file named "[red]x.png" or ":smile:.png" is shown as it is, never as markup
    table = Table(title=Text(title))
    for name, justify in (
        ("file", "left"),
        (column, "right"),
        ("confidence", "right"),
        (_top3_name(column).replace("top3", "top-3"), "left"),
        ("error", "left"),
    ):
        table.add_column(name, justify=justify)
    for r in rows:
        confidence = Text(
            "" if r.confidence is None else f"{r.confidence:.3f}" + (" ?" if r.uncertain else ""),
            style="dark_orange" if r.uncertain else "",
        )
        table.add_row(
            Text(visible(r.file)),
            Text(r.label or ""),
            confidence,
            Text(r.top3_text()),
            Text(visible(r.error or ""), style="red"),
        )
    Console(width=160).print(table)


def visible(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``): a file name holding a terminal's escape
    sequence must not colour, move or hide the rows."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mnist-bench predict", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("inputs", nargs="+", help="image files and folders")
    parser.add_argument(
        "--ckpt_path",
        required=True,
        help="a .ckpt file, or a run dir (lightning_logs/<model>/version_<n>) for its last.ckpt",
    )
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument(
        "--save_prepared",
        metavar="DIR",
        type=Path,
        help="write each prepared 28x28 image (what the model sees) as DIR/<file name>.png",
    )
    parser.add_argument(
        "--sheet",
        metavar="FILE.png",
        type=Path,
        help="write a contact sheet: each input, its prepared 28x28, the prediction and confidence",
    )
    parser.add_argument(
        "--number",
        action="store_true",
        help="each image is a row of digits (a year, a phone number): read it as a string",
    )
    parser.add_argument(
        "--uncertain_below",
        type=float,
        default=UNCERTAIN_BELOW,
        metavar="P",
        help=f"mark predictions less confident than P as uncertain (default {UNCERTAIN_BELOW})",
    )
    parser.add_argument(OVERWRITE_FLAG, action="store_true", help=OVERWRITE_HELP)
    parser.add_argument(ALLOW_IMPORTS_FLAG, action="append", metavar="PKG", help=ALLOW_IMPORTS_HELP)
    args = parser.parse_args(argv)
    if (problem := device_refusal(args.device)) is not None:
        print(
            f"mnist-bench predict: --device {args.device} {problem}. Fix: --device cpu (or cuda, cuda:N "
            "where there is a GPU)",
            file=sys.stderr,
        )
        return 2
    if not 0.0 <= args.uncertain_below <= 1.0:  # NaN fails too
        print(
            f"mnist-bench predict: --uncertain_below {args.uncertain_below} is not a probability. Fix: a"
            f" value from 0 to 1 (default {UNCERTAIN_BELOW})",
            file=sys.stderr,
        )
        return 2
    if args.csv and (problem := unwritable(Path(args.csv))):
        print(f"mnist-bench predict: cannot write --csv {args.csv}: {problem}", file=sys.stderr)
        return 2
    if args.sheet is not None and (problem := unwritable(args.sheet)):
        print(f"mnist-bench predict: cannot write --sheet {args.sheet}: {problem}", file=sys.stderr)
        return 2
    if args.sheet is not None and args.sheet.suffix.lower() != ".png":
        print(
            f"mnist-bench predict: --sheet {args.sheet} is written as PNG. Fix: a name ending in .png",
            file=sys.stderr,
        )
        return 2
    try:
        device = torch.device(args.device)
        checkpoint = resolve_checkpoint(args.ckpt_path)
        model = load_trained(args.ckpt_path, device, allow_imports=allowed_packages(args.allow_imports))
    except (ConfigError, UserFacingError, RuntimeError) as err:
        print(f"mnist-bench predict: {err}", file=sys.stderr)
        return 2
    if args.number and (
        model.dataset.framing != "digit" or class_column(model.dataset.class_names) != "digit"
    ):
        print(
            "mnist-bench predict: --number reads rows of digits, and this model's classes are "
            f"{model.dataset.name}'s. Fix: a checkpoint of a digit model (MNIST), or leave --number out",
            file=sys.stderr,
        )
        return 2
    files = image_files(args.inputs)
    if not files:
        print(f"mnist-bench predict: no image files in {' '.join(args.inputs)}", file=sys.stderr)
        return 2
    csv_path = Path(args.csv) if args.csv else None
    problem = output_refusal(csv_path, args.save_prepared, files, checkpoint, args.overwrite, args.sheet)
    if problem is not None:
        print(f"mnist-bench predict: {problem}", file=sys.stderr)
        return 2
    if args.save_prepared is not None:
        try:
            args.save_prepared.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(
                f"mnist-bench predict: cannot make --save_prepared {args.save_prepared}:"
                f" {err.strerror or err}",
                file=sys.stderr,
            )
            return 2
        if not os.access(args.save_prepared, os.W_OK):
            print(
                f"mnist-bench predict: cannot write in --save_prepared {args.save_prepared}", file=sys.stderr
            )
            return 2
    rows = predict_files(
        model,
        files,
        device,
        args.save_prepared,
        args.uncertain_below,
        keep_prepared=args.sheet is not None,
        number=args.number,
    )
    column = class_column(model.dataset.class_names, args.number)
    if args.csv:  # before the table, so that nothing the table does can lose the rows
        write_text_atomic(Path(args.csv), csv_text(rows, column))
    if args.sheet is not None:
        from mnist_bench.inference.sheet import contact_sheet
        from mnist_bench.utils import atomic_path

        with atomic_path(args.sheet) as partial:
            contact_sheet(rows, partial)
    print_table(
        rows, f"mnist-bench predict: {model.model_name} on {model.dataset.name} ({args.ckpt_path})", column
    )
    for written in (args.csv, args.sheet):
        if written:
            print(f"wrote {written}")
    uncertain = sum(r.uncertain for r in rows)
    if uncertain:
        print(
            f"{uncertain} of {len(rows)} predictions are uncertain (confidence below {args.uncertain_below})"
        )
    failed = sum(r.error is not None for r in rows)
    if failed:
        print(f"{failed} of {len(rows)} files failed", file=sys.stderr)
    return 1 if failed else 0
