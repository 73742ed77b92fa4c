import os
from pathlib import Path

import pytest

from mnist_bench.data.idx import raw_dir
from mnist_bench.data.synthetic import write_synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
REAL_DATA = Path(os.environ.get("MNIST_BENCH_DATA", ROOT / "data"))


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """``mnist-bench ARGS`` in this process: its exit code and what it wrote to stderr."""
    from mnist_bench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch):
    """Tests never download: ImageNet weights come from a closed port on this machine (connection refused),
    unless a test serves them itself."""
    from mnist_bench.models.components.pretrained import WEIGHTS_URL_VARIABLE

    monkeypatch.setenv(WEIGHTS_URL_VARIABLE, "http://127.0.0.1:9/models")


@pytest.fixture(autouse=True)
def own_cache_and_no_probes(monkeypatch, tmp_path_factory):
    """Tests never read or write the user's cache (the seed unit's), and a benchmark's estimate starts no
    probe run unless a test calls the probe itself (``estimate.run_probe`` imported before this fixture
    replaces it)."""
    from mnist_bench.benchmark.jobs import estimate
    from mnist_bench.benchmark.seed_unit import CACHE_VARIABLE

    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setattr(estimate, "run_probe", lambda *args, **kwargs: (None, "no probe runs in the tests"))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A tiny MNIST-shaped dataset (600 train, 200 test) in torchvision's raw layout."""
    data_dir = tmp_path_factory.mktemp("synthetic")
    write_synthetic_mnist(data_dir, n_train=600, n_test=200)
    return data_dir


@pytest.fixture
def tiny_fit_args(synthetic_data, tmp_path) -> list[str]:
    """Arguments that make any config a seconds-long run on the synthetic data, writing under tmp_path."""
    return [
        f"--data.data_dir={synthetic_data}",
        "--data.val_size=100",
        "--data.eval_batch_size=100",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def real_data_available() -> bool:
    return all(
        (raw_dir(REAL_DATA) / n).is_file() for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    )


def user_package(tmp_path: Path, monkeypatch, name: str, source: str) -> None:
    """A package of a user's own (``name``, one ``__init__.py``) on the import path, and no allowance for it
    in the environment: what a researcher writes outside mnist_bench."""
    package = tmp_path / "lab" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path / "lab"))
    monkeypatch.delenv("MNIST_BENCH_ALLOW_IMPORTS", raising=False)
