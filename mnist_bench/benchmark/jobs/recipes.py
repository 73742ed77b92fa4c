"""A model's recipe on a dataset: the config files that make it, in the order LightningCLI merges them.

``configs/<model>.yaml`` is the model's MNIST recipe. Another dataset's settings are an overlay given after
it, ``configs/data/<dataset>.yaml``; where a model's recipe differs there beyond the data (the Fashion-MNIST
CNN's rates), ``configs/<dataset>/<model>.yaml`` follows with only those keys. ``make benchmark
DATASET=fashion_mnist`` trains the CNN as ``--config configs/cnn.yaml --config configs/data/fashion_mnist.yaml
--config configs/fashion_mnist/cnn.yaml``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATASET = "mnist"  # the DataModule's own default: its recipes need no data overlay
DATA_OVERLAYS = "data"  # configs/data/<dataset>.yaml
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


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
    overlays = (config_dir / DATA_OVERLAYS).glob("*.yaml")
    return [DEFAULT_DATASET, *sorted(p.stem for p in overlays if p.stem != DEFAULT_DATASET)]


def missing_dataset(config_dir: Path, dataset: str) -> str | None:
    """Why ``dataset`` has no usable recipes here (one line with the fix), or None: a name that is not a plain
    name, no data overlay for it, or an overlay that is not a ``data:`` section naming a known dataset."""
    have = available_datasets(config_dir)
    if not DATASET_NAME.match(dataset):
        return f"--dataset {dataset!r}: letters, digits, '_' and '-' only (have: {', '.join(have)})"
    overlay = config_dir / DATA_OVERLAYS / f"{dataset}.yaml"
    if not overlay.is_file():
        if dataset == DEFAULT_DATASET:
            return None
        close = difflib.get_close_matches(dataset.lower().replace("-", "_"), have, n=1, cutoff=0.8)
        hint = f"did you mean {close[0]}? Else w" if close else "W"
        return (
            f"--dataset {dataset}: no {overlay} (have: {', '.join(have)}). Fix: {hint}rite it with the"
            f" dataset's data: settings, e.g. 'data: {{dataset: {dataset}}}'"
        )
    return overlay_problem(overlay)


def overlay_problem(overlay: Path) -> str | None:
    """What is wrong with a data overlay (one line naming the file), or None: it must be a YAML mapping with a
    ``data:`` section, and a ``dataset`` it names must be registered (unless its own class_path loads the
    data)."""
    import yaml

    from mnist_bench.data.datasets import DATASETS

    fix = "Fix: a data: section, e.g. 'data: {dataset: fashion_mnist}'"
    try:
        given = yaml.safe_load(overlay.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return f"{overlay}: not a readable YAML file ({type(err).__name__}). {fix}"
    if not isinstance(given, dict) or not isinstance(given.get("data"), dict):
        return f"{overlay}: no data: section. {fix}"
    data = given["data"]
    name = data.get("dataset", (data.get("init_args") or {}).get("dataset"))
    if name is not None and "class_path" not in data and name not in DATASETS:
        return (
            f"{overlay}: data.dataset {name!r} is not a known dataset (known: {', '.join(sorted(DATASETS))})"
        )
    return None


def recipe_for(model: str, config_dir: Path, dataset: str = DEFAULT_DATASET) -> Recipe:
    """``model``'s recipe on ``dataset``: its config, then the dataset's data overlay and the model's own
    overlay for that dataset where there are such files."""
    overlays = [config_dir / DATA_OVERLAYS / f"{dataset}.yaml", config_dir / dataset / f"{model}.yaml"]
    return Recipe(model, (config_dir / f"{model}.yaml", *(path for path in overlays if path.is_file())))
