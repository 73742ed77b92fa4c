"""Reading, writing and checking IDX files (the format of the MNIST family's raw files)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from mnist_bench.data.datasets import DEFAULT_DATASET, dataset_spec
from mnist_bench.utils import atomic_path

UBYTE = 0x08


class DataFileError(Exception):
    """A data file is missing, truncated or not the file it claims to be."""


def raw_dir(data_dir: str | os.PathLike, dataset: str = DEFAULT_DATASET) -> Path:
    """torchvision's layout: ``<data_dir>/<torchvision class>/raw``, e.g. ``data/MNIST/raw``."""
    return Path(data_dir) / dataset_spec(dataset).torchvision_class / "raw"


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically (a temp file renamed into place)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.write(array.tobytes())


def read_header(path: Path) -> tuple[int, ...]:
    """Return the dimensions declared by an IDX header; raise DataFileError if it is not a uint8 IDX file."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != UBYTE or not 1 <= head[3] <= 3:
            raise DataFileError(f"{path}: not a uint8 IDX file (bad header {head.hex() or 'empty'})")
        ndim = head[3]
        dims = f.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DataFileError(f"{path}: header cut short")
    return struct.unpack(f">{ndim}I", dims)


def expected_shape(name: str, items: int, size: int) -> tuple[int, ...]:
    return (items, size, size) if "images" in name else (items,)


def check_structure(path: Path, name: str, size: int) -> tuple[int, ...]:
    """Check that ``path`` exists, has the right IDX header for ``name`` (images ``size`` px square) and exactly the
    bytes it declares."""
    if not path.is_file():
        raise DataFileError(f"{path}: missing")
    dims = read_header(path)
    want_ndim = 3 if "images" in name else 1
    if len(dims) != want_ndim or (want_ndim == 3 and dims[1:] != (size, size)):
        raise DataFileError(f"{path}: header declares shape {dims}, expected {f'N×{size}×{size}' if want_ndim == 3 else 'N'}")
    size = path.stat().st_size
    want = 4 + 4 * len(dims) + int(np.prod(dims))
    if size != want:
        raise DataFileError(f"{path}: {size} bytes, its header declares {want} (truncated or padded)")
    return dims


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_official(data_dir: str | os.PathLike, dataset: str = DEFAULT_DATASET) -> None:
    """Check all four raw files against the official ones: header, exact size and md5."""
    spec = dataset_spec(dataset)
    root = raw_dir(data_dir, dataset)
    size = spec.info.image_size
    for name, (md5, items) in spec.raw_files.items():
        path = root / name
        dims = check_structure(path, name, size)
        if dims != expected_shape(name, items, size):
            raise DataFileError(f"{path}: shape {dims}, the official file has {expected_shape(name, items, size)}")
        if md5 is None:
            continue
        got = md5sum(path)
        if got != md5:
            raise DataFileError(f"{path}: md5 {got}, the official file has {md5}")


def check_dataset(data_dir: str | os.PathLike, dataset: str = DEFAULT_DATASET) -> dict[str, tuple[int, ...]]:
    """Structural check of the four raw files, and the md5 of any file with the official item count (a flipped byte
    in the real files is caught; small synthetic sets pass). Returns their shapes."""
    spec = dataset_spec(dataset)
    root = raw_dir(data_dir, dataset)
    shapes = {name: check_structure(root / name, name, spec.info.image_size) for name in spec.raw_files}
    for name, (md5, items) in spec.raw_files.items():
        if md5 is not None and shapes[name][0] == items and (got := md5sum(root / name)) != md5:
            raise DataFileError(f"{root / name}: has the official size but md5 {got}, not {md5} (damaged)")
    for split in ("train", "t10k"):
        n_img = shapes[f"{split}-images-idx3-ubyte"][0]
        n_lab = shapes[f"{split}-labels-idx1-ubyte"][0]
        if n_img != n_lab:
            raise DataFileError(f"{root}: {split} has {n_img} images but {n_lab} labels")
    return shapes
