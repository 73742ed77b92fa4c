"""The DataModules: ``TensorDataModule``, the base for any dataset held in memory as tensors (batches served
by slicing), and ``MNISTDataModule``, torchvision's loader for MNIST or another dataset of its family."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mnist_bench.data.datasets import DEFAULT_DATASET, DatasetInfo, dataset_spec
from mnist_bench.data.idx import DataFileError, check_dataset, file_in_the_way, official_split, raw_dir
from mnist_bench.errors import ConfigError, UserFacingError


class MissingDataError(UserFacingError):
    """The dataset's files are missing or damaged; the message says how to fix it."""


class TensorImages(Dataset):
    """uint8 images (N×1×28×28) and int64 labels, fetched a whole batch at a time with ``__getitems__``."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, device=self.labels.device)
        return self.images[idx], self.labels[idx]

    def to(self, device: torch.device) -> TensorImages:
        return TensorImages(self.images.to(device), self.labels.to(device))


class ShuffledBatches:
    """Training batches for one process: a new permutation each epoch, served as tensor slices.

    Lightning takes any sized iterable as a training loader. Next to ``DataLoader(shuffle=True)`` this skips
    the sampler, the fetcher and the per-index Python work, about 0.15 ms a step: 1% of the CNN's step on a
    2-core CPU. It makes the same draws from torch's seeded generator as that DataLoader (its base seed, then
    its sampler's seed), so a seed gives the same batches on either path.
    """

    def __init__(self, data: TensorImages, batch_size: int, before_epoch: Callable[[], None] | None = None):
        self.data, self.batch_size = data, batch_size
        self.before_epoch = before_epoch

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        if self.before_epoch is not None:
            self.before_epoch()
        torch.empty(
            (), dtype=torch.int64
        ).random_()  # the DataLoader's base seed (for workers; there are none)
        seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's
        order = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(seed))
        for idx in order.to(self.data.labels.device).split(self.batch_size):
            yield self.data.images[idx], self.data.labels[idx]


class ShardSampler(DistributedSampler):
    """Evaluation under DDP: rank r of n reads items r, r + n, r + 2n, ... Every item is read exactly once
    over all ranks (``DistributedSampler`` pads with repeated items so that ranks get equal shares, which
    would skew the metrics). Being a ``DistributedSampler``, Lightning leaves it in place."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, self.total_size, self.num_replicas))


def _keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


def random_affine(x: Tensor, max_shift_px: float, max_rotate_deg: float, max_scale: float = 0.0) -> Tensor:
    """Random per-image shifts (±px), rotations (±deg) and zooms (×1±max_scale) of a float batch, as one grid
    sample on its device."""
    n = x.shape[0]
    opts = {"device": x.device, "dtype": x.dtype}
    angle = (torch.rand(n, **opts) * 2 - 1) * math.radians(max_rotate_deg)
    shift = (torch.rand(n, 2, **opts) * 2 - 1) * (2 * max_shift_px / x.shape[-1])
    zoom = 1 + (torch.rand(n, **opts) * 2 - 1) * max_scale
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class TensorDataModule(LightningDataModule):
    """A dataset held in memory as uint8 image tensors, with a seeded train/val split: the base of every
    DataModule here. A subclass gives its facts as ``info`` (a :class:`DatasetInfo`) and its images with
    ``load(train)`` (a :class:`TensorImages` of N×1×H×W uint8 images and int64 labels); it checks no files of
    its own.

    The tensors are loaded once (and moved to the GPU once, when there is one); normalization and the optional
    augmentation run per batch on the device in ``on_after_batch_transfer``.

    Under DDP ``batch_size`` is per device: the global batch is ``batch_size × devices × num_nodes``, and the
    learning rate is not rescaled (see the README's "Scaling out").
    """

    info: DatasetInfo  # a class attribute of the subclass, or a property
    hflip: bool = False  # horizontal flips in augmentation (they suit clothes, never digits)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt = 1000,
        val_size: NonNegativeInt = 5000,
        split_seed: int = 0,
        augment: bool = False,
        max_shift_px: NonNegativeFloat = 2.0,
        max_rotate_deg: NonNegativeFloat = 10.0,
        max_scale: NonNegativeFloat = 0.1,
        train_subset: PositiveInt | None = None,
    ):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be positive")
        if val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {val_size}")
        if train_subset == 1:
            raise ConfigError(
                "data.train_subset 1: a single training image measures nothing (and cannot train "
                "batch normalization at all). Fix: 2 or more, or leave it out"
            )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.augment = augment
        self.max_shift_px = max_shift_px
        self.max_rotate_deg = max_rotate_deg
        self.max_scale = max_scale
        self.train_subset = train_subset
        self._resumed_rng: dict[str, Any] | None = None
        self.train_set: TensorImages | None = None
        self.val_set: TensorImages | None = None
        self.test_set: TensorImages | None = None
        self.official_test: bool | None = (
            None  # whether the test set is the dataset's published one; None: unknown
        )

    def load(self, train: bool) -> TensorImages:
        """The training split (``train``) or the test split, as uint8 images and int64 labels."""
        raise NotImplementedError(f"{type(self).__name__} must define load(train) returning a TensorImages")

    def _loaded(self, train: bool) -> TensorImages:
        data = self.load(train)
        labels = data.labels
        if len(labels) and (int(labels.max()) >= self.info.num_classes or int(labels.min()) < 0):
            raise ConfigError(
                f"{type(self).__name__}: the {'training' if train else 'test'} split holds a label "
                f"outside 0..{self.info.num_classes - 1} (its info has {self.info.num_classes} "
                "classes)"
            )
        return data

    def setup(self, stage: str) -> None:
        device = self._device()
        if stage in ("fit", "validate") and self.train_set is None:
            full = self._loaded(train=True)
            if self.val_size >= len(full):
                raise ConfigError(
                    f"data.val_size={self.val_size} leaves no training images (train has {len(full)})"
                )
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.split_seed))
            val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
            if self.train_subset:
                train_idx = train_idx[: self.train_subset]
            self.train_set = TensorImages(full.images[train_idx], full.labels[train_idx]).to(device)
            self.val_set = TensorImages(full.images[val_idx], full.labels[val_idx]).to(device)
        if stage in ("test", "predict") and self.test_set is None:
            self.test_set = self._loaded(train=False).to(device)

    def _device(self) -> torch.device:
        trainer = self.trainer
        if trainer is not None and trainer.strategy.root_device.type == "cuda" and trainer.world_size == 1:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _loader(self, data: TensorImages, batch_size: int, shuffle: bool) -> DataLoader:
        # Training under DDP gets Lightning's DistributedSampler (shuffled, a distinct shard per rank each
        # epoch); evaluation gets exact, unpadded shards.
        trainer = self.trainer
        sampler = None
        if not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = ShardSampler(data, trainer.world_size, trainer.global_rank)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=_keep_batch,
            num_workers=0,
        )

    def train_dataloader(self) -> ShuffledBatches | DataLoader:
        trainer = self.trainer
        if trainer is None or (trainer.world_size == 1 and not trainer.overfit_batches):
            return ShuffledBatches(self.train_set, self.batch_size, before_epoch=self._restore_rng)
        # DDP and overfit_batches: Lightning swaps the sampler of a DataLoader (a distributed or a sequential
        # one)
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # --- resume: the run goes on with the random numbers it would have drawn
    # ------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Saved in each checkpoint (at the end of a training epoch, after its validation): the random number
        state, so that a resumed run draws the next epoch's batch order, augmentation and dropout as the
        uninterrupted run does."""
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # applied when the next training epoch draws its batch order, after the sanity check (whose loader
        # draws a seed) and wherever Lightning creates the training iterator
        self._resumed_rng = dict(state_dict) if "torch_rng" in state_dict else None

    def _restore_rng(self) -> None:
        state, self._resumed_rng = self._resumed_rng, None
        if state is None:
            return
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            for device, rng in enumerate(state["cuda_rng"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(rng, device)  # the GPUs this run can see

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        images, labels = batch
        x = images.float() / 255.0
        if self.augment and self.trainer is not None and self.trainer.training:
            x = random_affine(x, self.max_shift_px, self.max_rotate_deg, self.max_scale)
            if self.hflip:
                flip = torch.rand(len(x), device=x.device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return self.info.normalize(x), labels


class MNISTDataModule(TensorDataModule):
    """MNIST through ``torchvision.datasets.MNIST(download=False)``, or another dataset of torchvision's MNIST
    family (``dataset``, registered in ``data/datasets.py``): its four IDX files are checked (structure, and
    the md5 of a file of the published size) before they are read. Run ``mnist-bench data`` first."""

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt = 1000,
        val_size: NonNegativeInt = 5000,
        split_seed: int = 0,
        augment: bool = False,
        max_shift_px: NonNegativeFloat = 2.0,
        max_rotate_deg: NonNegativeFloat = 10.0,
        max_scale: NonNegativeFloat = 0.1,
        train_subset: PositiveInt | None = None,
        dataset: str = DEFAULT_DATASET,
    ):
        self.spec = dataset_spec(dataset)
        super().__init__(
            data_dir,
            batch_size,
            eval_batch_size,
            val_size,
            split_seed,
            augment,
            max_shift_px,
            max_rotate_deg,
            max_scale,
            train_subset,
        )
        self.dataset = dataset
        self._files_checked = False

    @property
    def info(self) -> DatasetInfo:
        return self.spec.info

    @property
    def hflip(self) -> bool:
        return self.spec.hflip

    def check_files(self) -> None:
        """Checks the four files once per DataModule (prepare_data runs on one process per node, setup on
        all)."""
        if self._files_checked:
            return
        blocked = file_in_the_way(self._raw_dir)
        if blocked is not None:
            raise MissingDataError(
                f"data_dir {self.data_dir}: {blocked} is a file, so {self._raw_dir} cannot hold "
                f"the data. Fix: a data_dir whose path is all folders, or move {blocked} away"
            )
        try:
            shapes = check_dataset(self.data_dir, self.dataset)
            self.official_test = official_split(shapes, self.dataset, train=False)
            self._files_checked = True
        except PermissionError as err:
            raise MissingDataError(
                f"cannot read {err.filename or self._raw_dir}: permission denied. Fix: "
                f"make the files readable (chmod a+r), not a new download"
            ) from None
        except (DataFileError, OSError) as err:
            raise MissingDataError(
                f"{self.spec.torchvision_class} data in {self._raw_dir} is missing or damaged ({err}). "
                f"Fix: {self._fetch_command} --force (it keeps the files it replaces, in raw.replaced-<time>)"
            ) from None

    @property
    def _raw_dir(self) -> Path:
        return raw_dir(self.data_dir, self.dataset)

    @property
    def _fetch_command(self) -> str:
        flag = f" --dataset {self.dataset}" if self.dataset != DEFAULT_DATASET else ""
        return f"mnist-bench data --data_dir {self.data_dir}{flag}"

    def prepare_data(self) -> None:
        # a subclass that loads data of its own (load or _load of its own) has no IDX files to check up front
        if type(self).load is MNISTDataModule.load and type(self)._load is MNISTDataModule._load:
            self.check_files()

    def load(self, train: bool) -> TensorImages:
        return self._load(train)

    def _load(self, train: bool) -> TensorImages:
        """The dataset's IDX files through torchvision, checked first (a subclass may call it and filter)."""
        import torchvision.datasets

        self.check_files()
        loader = getattr(torchvision.datasets, self.spec.torchvision_class)
        ds = loader(str(Path(self.data_dir)), train=train, download=False)
        targets = (
            ds.targets if ds.targets.ndim == 1 else ds.targets[:, 0]
        )  # QMNIST: the class, then provenance
        if len(targets) and (int(targets.max()) >= self.info.num_classes or int(targets.min()) < 0):
            name = self.spec.split_files(train)[1]
            raise MissingDataError(
                f"{self._raw_dir / name} holds a label outside 0..{self.info.num_classes - 1} "
                f"(damaged). Fix: {self._fetch_command} --force"
            )
        return TensorImages(ds.data.unsqueeze(1).contiguous(), targets.long())
