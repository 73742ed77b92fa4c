"""The datasets the DataModule serves, each with its own facts: statistics, class names, image size, files.

``DatasetInfo`` is what a model needs to know about its images; it travels from the DataModule to the model (a
LightningCLI link) and is saved in every checkpoint, so that predict, export and the figures use the dataset
the model was trained on. ``DatasetSpec`` adds what the DataModule needs to read the files. Nothing outside
``data/`` knows any dataset's numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from mnist_bench.errors import ConfigError

DEFAULT_DATASET = "mnist"
# How a user's own image is made into one of a dataset's (mnist_bench.inference.images): ink strokes framed as
# MNIST's digits, or an object photographed on a plain background framed as Fashion-MNIST's garments.
FRAMINGS = ("digit", "product")


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's images as a model sees them: N×1×size×size, normalized with ``mean`` and ``std``."""

    name: str
    class_names: tuple[str, ...]
    mean: float
    std: float
    image_size: int = 28
    framing: str = "digit"  # one of FRAMINGS

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ConfigError(
                f"dataset {self.name!r}: framing {self.framing!r} is unknown. Fix: one of "
                f"{', '.join(FRAMINGS)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, pixels: Tensor) -> Tensor:
        """Pixels (uint8, or floats in [0, 1]) to the normalized floats the models are trained on."""
        if pixels.dtype == torch.uint8:
            pixels = pixels.float() / 255.0
        return (pixels - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to [0, 1] pixels, for pictures and for the detector's ink boxes."""
        return (x * self.std + self.mean).clamp(0, 1)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists, floats), as checkpoints store it (loadable with
        ``torch.load(weights_only=True)``)."""
        return {**asdict(self), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> DatasetInfo:
        """The info a checkpoint or a config holds; ``None`` (a checkpoint from before datasets had info, or a
        model built in Python without a DataModule) is the default dataset's."""
        if value is None:
            return dataset_spec(DEFAULT_DATASET).info
        if isinstance(value, DatasetInfo):
            return value
        try:
            name = str(value["name"])
            known = DATASETS.get(name)  # a checkpoint saved before the info had a framing: the dataset's own
            framing = value.get("framing") or (known.info.framing if known else "digit")
            return cls(
                name=name,
                class_names=tuple(str(c) for c in value["class_names"]),
                mean=float(value["mean"]),
                std=float(value["std"]),
                image_size=int(value.get("image_size", 28)),
                framing=str(framing),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"model.dataset must hold name, class_names, mean and std, got {value!r}"
            ) from err


@dataclass(frozen=True)
class DatasetSpec:
    """What the DataModule needs besides the info: torchvision's dataset class (also the folder under
    data_dir, as torchvision lays it out), the raw IDX files with their md5s and item counts, and the
    augmentation policy."""

    info: DatasetInfo
    torchvision_class: str  # e.g. "MNIST": torchvision.datasets.MNIST, files in <data_dir>/MNIST/raw
    # name -> (md5 of the uncompressed file, or None where none is published; number of items)
    raw_files: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    hflip: bool = False  # horizontal flips in augmentation (they suit clothes, never digits)
    home: str = ""  # where the files are published, named when they must be placed by hand

    def split_files(self, train: bool) -> tuple[str, str]:
        """The (images, labels) raw files of the training or the test split: the names with "train" in them,
        or the others ("t10k" for MNIST, "test" for QMNIST)."""
        names = [n for n in self.raw_files if ("train" in n) == train]
        images = [n for n in names if "images" in n]
        labels = [n for n in names if "labels" in n]
        if len(images) != 1 or len(labels) != 1:
            raise ConfigError(
                f"dataset {self.info.name!r}: raw_files must name one images and one labels file per "
                f"split (train: names with 'train'), got {list(self.raw_files)}"
            )
        return images[0], labels[0]


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Adds a dataset under ``spec.info.name`` (a user's module can add its own)."""
    DATASETS[spec.info.name] = spec
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"data.dataset: unknown dataset {name!r}. Fix: one of {', '.join(sorted(DATASETS))}"
        ) from None


MNIST = register_dataset(
    DatasetSpec(
        # mean and std of the 60k training images, as fractions of 255
        info=DatasetInfo("mnist", tuple(str(d) for d in range(10)), mean=0.1307, std=0.3081),
        torchvision_class="MNIST",
        raw_files={
            "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 60_000),
            "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_000),
            "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 10_000),
            "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_000),
        },
    )
)

FASHION_MNIST = register_dataset(
    DatasetSpec(
        # Zalando's Fashion-MNIST (MIT licence): the same IDX layout; mean and std of its 60k training images
        info=DatasetInfo(
            "fashion_mnist",
            (
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            mean=0.2860,
            std=0.3530,
            framing="product",
        ),  # product photos on white, trimmed, longer side 28 px
        torchvision_class="FashionMNIST",
        raw_files={
            "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 60_000),
            "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60_000),
            "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 10_000),
            "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10_000),
        },
        hflip=True,  # a mirrored shirt is a shirt
        home="https://github.com/zalandoresearch/fashion-mnist",
    )
)

KMNIST = register_dataset(
    DatasetSpec(
        # Kuzushiji-MNIST (CC BY-SA 4.0): ten cursive hiragana, torchvision's KMNIST. Only the compressed
        # files' md5s are published (torchvision checks them when it downloads); here the uncompressed files'
        # structure is checked.
        home="https://github.com/rois-codh/kmnist",
        info=DatasetInfo(
            "kmnist", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), mean=0.1918, std=0.3483
        ),
        torchvision_class="KMNIST",
        raw_files={
            "train-images-idx3-ubyte": (None, 60_000),
            "train-labels-idx1-ubyte": (None, 60_000),
            "t10k-images-idx3-ubyte": (None, 10_000),
            "t10k-labels-idx1-ubyte": (None, 10_000),
        },
    )
)

QMNIST = register_dataset(
    DatasetSpec(
        # QMNIST (Yadav & Bottou 2019): MNIST's digits rebuilt from NIST, with the 60,000 test images that
        # MNIST's 10,000 were drawn from. torchvision's QMNIST reads them; its labels are N×8 int32 (the
        # class, then NIST provenance). The training set reproduces MNIST's, so MNIST's mean and std are used.
        info=DatasetInfo("qmnist", tuple(str(d) for d in range(10)), mean=0.1307, std=0.3081),
        torchvision_class="QMNIST",
        # torchvision checks the compressed files' md5s when it downloads; here the structure is checked
        raw_files={
            "qmnist-train-images-idx3-ubyte": (None, 60_000),
            "qmnist-train-labels-idx2-int": (None, 60_000),
            "qmnist-test-images-idx3-ubyte": (None, 60_000),
            "qmnist-test-labels-idx2-int": (None, 60_000),
        },
        home="https://github.com/facebookresearch/qmnist",
    )
)
