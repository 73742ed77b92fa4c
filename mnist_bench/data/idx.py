"""Reading, writing and checking IDX files (the format of the MNIST family's raw files)."""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path

import numpy as np

from mnist_bench.data.datasets import DEFAULT_DATASET, dataset_spec
from mnist_bench.utils import atomic_path

UBYTE = 0x08
INT32 = 0x0C
# An IDX file's name says what it holds: "-idx3-ubyte" is a 3-D array of bytes, "-idx2-int" a 2-D array of
# big-endian int32 (QMNIST's labels: the class and seven more columns of NIST provenance per image).
IDX_TYPES = {"ubyte": (UBYTE, np.dtype(np.uint8)), "int": (INT32, np.dtype(">i4"))}
_IDX_NAME = re.compile(r"idx([1-3])-(ubyte|int)$")


class DataFileError(Exception):
    """A data file is missing, truncated or not the file it claims to be."""


def raw_dir(data_dir: str | os.PathLike, dataset: str = DEFAULT_DATASET) -> Path:
    """torchvision's layout: ``<data_dir>/<torchvision class>/raw``, e.g. ``data/MNIST/raw``."""
    return Path(data_dir) / dataset_spec(dataset).torchvision_class / "raw"


def file_in_the_way(folder: Path) -> Path | None:
    """The file that sits at ``folder`` or at one of its parents (so the folder cannot exist), else None."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def idx_layout(name: str) -> tuple[int, int, np.dtype]:
    """(dimensions, IDX type code, dtype) that a raw file's name declares, e.g.
    ``train-labels-idx1-ubyte``."""
    match = _IDX_NAME.search(name)
    if match is None:
        raise ValueError(f"{name}: not an IDX file name (it must end in -idx<N>-ubyte or -idx<N>-int)")
    code, dtype = IDX_TYPES[match.group(2)]
    return int(match.group(1)), code, dtype


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file of the type its name declares (uint8, or int32 for ``-int`` files),
    atomically (a temp file renamed into place)."""
    _, code, dtype = idx_layout(Path(path).name)
    array = np.ascontiguousarray(array, dtype=dtype)
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.write(array.tobytes())


def read_header(path: Path, code: int = UBYTE) -> tuple[int, ...]:
    """Return the dimensions declared by an IDX header; raise DataFileError if it is not an IDX file of the
    type ``code`` (uint8 by default)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != code or not 1 <= head[3] <= 3:
            kind = "uint8" if code == UBYTE else "int32"
            raise DataFileError(f"{path}: not a {kind} IDX file (bad header {head.hex() or 'empty'})")
        ndim = head[3]
        dims = f.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DataFileError(f"{path}: header cut short")
    return struct.unpack(f">{ndim}I", dims)


def expected_shape(name: str, items: int, size: int) -> tuple[int, ...]:
    """The leading dimensions an official file has (labels may have more columns, as QMNIST's do)."""
    return (items, size, size) if "images" in name else (items,)


def check_structure(path: Path, name: str, size: int) -> tuple[int, ...]:
    """Check that ``path`` exists, has the IDX header its ``name`` declares (images ``size`` px square) and
    exactly the bytes it declares."""
    if not path.is_file():
        raise DataFileError(f"{path}: missing")
    want_ndim, code, dtype = idx_layout(name)
    dims = read_header(path, code)
    if len(dims) != want_ndim or ("images" in name and dims[1:] != (size, size)):
        want = f"N×{size}×{size}" if "images" in name else "×".join(["N"] + ["k"] * (want_ndim - 1))
        raise DataFileError(f"{path}: header declares shape {dims}, expected {want}")
    size = path.stat().st_size
    want = 4 + 4 * len(dims) + int(np.prod(dims)) * dtype.itemsize
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
        official = expected_shape(name, items, size)
        if dims[: len(official)] != official:
            raise DataFileError(f"{path}: shape {dims}, the official file has {official}")
        if md5 is None:
            continue
        got = md5sum(path)
        if got != md5:
            raise DataFileError(f"{path}: md5 {got}, the official file has {md5}")


def check_dataset(data_dir: str | os.PathLike, dataset: str = DEFAULT_DATASET) -> dict[str, tuple[int, ...]]:
    """Structural check of the four raw files, and the md5 of any file with the official item count (a flipped
    byte in the real files is caught; small synthetic sets pass). Returns their shapes."""
    spec = dataset_spec(dataset)
    root = raw_dir(data_dir, dataset)
    shapes = {name: check_structure(root / name, name, spec.info.image_size) for name in spec.raw_files}
    for name, (md5, items) in spec.raw_files.items():
        if md5 is not None and shapes[name][0] == items and (got := md5sum(root / name)) != md5:
            raise DataFileError(f"{root / name}: has the official size but md5 {got}, not {md5} (damaged)")
    for train in (True, False):
        images, labels = spec.split_files(train)
        n_img, n_lab = shapes[images][0], shapes[labels][0]
        if n_img != n_lab:
            raise DataFileError(
                f"{root}: {'train' if train else 'test'} has {n_img} images but {n_lab} labels"
            )
    return shapes


def official_split(shapes: dict[str, tuple[int, ...]], dataset: str, train: bool) -> bool | None:
    """Whether a split's two files (their shapes from ``check_dataset``) are the published ones: the published
    item count, whose md5 ``check_dataset`` has then checked. A cut, padded or home-made set is not (False); a
    set of the published count whose dataset publishes no md5 (KMNIST, QMNIST here) cannot be told apart
    (None)."""
    spec = dataset_spec(dataset)
    names = spec.split_files(train)
    if not all(shapes[name][0] == spec.raw_files[name][1] for name in names):
        return False
    return True if all(spec.raw_files[name][0] is not None for name in names) else None
