"""Where a result came from: device, library versions and git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "timm", "numpy", "mnist-bench")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device | str) -> str:
    """For example 'cpu: AMD EPYC 9R14 (2 cores)' or 'cuda: NVIDIA H100 80GB HBM3'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{device.type}: {cpu_name()} ({cores} cores, {torch.get_num_threads()} threads)"


# A copy of the tree sent elsewhere (scripts/gpu_check.sh on a GPU machine) names the commit it was made from
# here: such a copy may carry no .git, or a stale one.
GIT_SHA_VARIABLE = "MNIST_BENCH_GIT_SHA"


def git_sha(cwd: str | Path | None = None) -> str | None:
    """``$MNIST_BENCH_GIT_SHA`` when set; else the commit of the working tree, with '-dirty' when it has
    uncommitted changes; None outside git."""
    fallback = os.environ.get(GIT_SHA_VARIABLE) or None
    if fallback:
        return fallback
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, timeout=10
        )
        if sha.returncode != 0:
            return fallback
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


SOURCE_GLOBS = ("mnist_bench/**/*.py", "configs/**/*.yaml", "scripts/*", "Makefile", "pyproject.toml")


def source_digest(
    root: str | Path, patterns: tuple[str, ...] = SOURCE_GLOBS, skip: tuple[str, ...] = ()
) -> str:
    """sha256 (first 16 hex digits) of the files under ``root`` that match ``patterns`` (by default the code
    and configs: tells whether a copy of the tree is the one a commit was recorded for), less those named in
    ``skip`` (paths relative to ``root``)."""
    import hashlib

    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(
        {
            p
            for pattern in patterns
            for p in root.glob(pattern)
            if p.is_file() and p.relative_to(root).as_posix() not in skip
        }
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
