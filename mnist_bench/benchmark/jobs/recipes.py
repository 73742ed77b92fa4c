"""A model's recipe on a dataset: the config files that make it, in the order LightningCLI merges them.

``configs/<model>.yaml`` is the model's MNIST recipe. Another dataset's settings are an overlay given after
it, ``configs/data/<dataset>.yaml``; where a model's recipe differs there beyond the data (the Fashion-MNIST
CNN's rates), ``configs/<dataset>/<model>.yaml`` follows with only those keys. ``make benchmark
DATASET=fashion_mnist`` trains the CNN as ``--config configs/cnn.yaml --config configs/data/fashion_mnist.yaml
--config configs/fashion_mnist/cnn.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATASET = "mnist"  # the DataModule's own default: its recipes need no data overlay
DATA_OVERLAYS = "data"  # configs/data/<dataset>.yaml


@dataclass(frozen=True)
class Recipe:
    model: str
    files: tuple[Path, ...]

    def config_args(self) -> list[str]:
        """``--config`` for each file, in order (later files override earlier ones)."""
        return [arg for path in self.files for arg in ("--config", str(path))]

    def texts(self) -> list[str | None]:
        """Each file's text (None for a file that is gone): what the run's result depends on."""
        return [path.read_text() if path.is_file() else None for path in self.files]

    def describe(self) -> str:
        return " ".join(self.config_args())


def available_models(config_dir: Path) -> list[str]:
    """The models with a recipe: ``configs/<model>.yaml``."""
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def available_datasets(config_dir: Path) -> list[str]:
    """MNIST and every dataset with a data overlay in ``configs/data/``."""
    return [
        DEFAULT_DATASET,
        *sorted(p.stem for p in (config_dir / DATA_OVERLAYS).glob("*.yaml") if p.stem != DEFAULT_DATASET),
    ]


def missing_dataset(config_dir: Path, dataset: str) -> str | None:
    """Why ``dataset`` has no recipes here (one line with the fix), or None."""
    if dataset == DEFAULT_DATASET or (config_dir / DATA_OVERLAYS / f"{dataset}.yaml").is_file():
        return None
    return (
        f"--dataset {dataset}: no {config_dir / DATA_OVERLAYS / dataset}.yaml (have:"
        f" {', '.join(available_datasets(config_dir))}). Fix: write it with the dataset's data: settings,"
        f" e.g. 'data: {{dataset: {dataset}}}'"
    )


def recipe_for(model: str, config_dir: Path, dataset: str = DEFAULT_DATASET) -> Recipe:
    """``model``'s recipe on ``dataset``: its config, then the dataset's data overlay and the model's own
    overlay for that dataset where there are such files."""
    files = [config_dir / f"{model}.yaml"]
    if dataset != DEFAULT_DATASET:
        overlays = [config_dir / DATA_OVERLAYS / f"{dataset}.yaml", config_dir / dataset / f"{model}.yaml"]
        files += [path for path in overlays if path.is_file()]
    return Recipe(model, tuple(files))
