"""The dataset seam: a second dataset, registered in the test, trains an unchanged model config; its class
count, names and statistics reach the model, its checkpoint, the figures, predict and export; a DataModule
from a user's package is named in a config once allowed."""

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from mnist_bench.cli import main
from mnist_bench.data import datasets
from mnist_bench.data.datasets import DatasetInfo, DatasetSpec, dataset_spec
from mnist_bench.data.synthetic import write_synthetic_mnist
from mnist_bench.errors import ConfigError
from mnist_bench.inference.checkpoints import load_trained
from mnist_bench.inference.export import main as export_main
from mnist_bench.inference.predict import main as predict_main
from mnist_bench.models import CNN

from ..conftest import ROOT, run_main, user_package

NAMES = ("circle", "line", "cross")
# files under <data_dir>/FashionMNIST/raw, read by torchvision's FashionMNIST loader; item counts that no
# synthetic file has, so only the structure is checked
TOY = DatasetSpec(
    info=DatasetInfo("toy3", NAMES, mean=0.2, std=0.35),
    torchvision_class="FashionMNIST",
    raw_files={name: ("0" * 32, 10**9) for name in datasets.MNIST.raw_files},
    hflip=True,
)


@pytest.fixture
def toy3(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "toy3", TOY)
    data_dir = tmp_path / "data"
    write_synthetic_mnist(data_dir, n_train=300, n_test=90, dataset="toy3")
    return data_dir


def fit_args(data_dir, tmp_path) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={data_dir}",
        "--data.dataset=toy3",
        "--data.val_size=30",
        "--data.eval_batch_size=30",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def test_a_second_dataset_trains_the_unchanged_config_and_travels_with_the_model(toy3, tmp_path, capsys):
    main(fit_args(toy3, tmp_path))
    run = tmp_path / "lightning_logs" / "cnn_toy3" / "version_0"  # runs on other data than MNIST: own folder
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test/images"] == 90 and metrics["dataset"] == "toy3"
    model = load_trained(run)
    assert model.dataset.name == "toy3" and model.dataset.class_names == NAMES
    assert model.dataset.mean == pytest.approx(0.2) and model.num_classes == 3
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert (run / "confusion_matrix.png").is_file()

    image = tmp_path / "stroke.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255
    Image.fromarray(pixels).save(image)
    csv_path = tmp_path / "rows.csv"
    assert predict_main(["--ckpt_path", str(run), str(image), "--csv", str(csv_path)]) == 0
    row = csv_path.read_text().splitlines()[1].split(",")
    assert row[1] in NAMES and all(item.split(":")[0] in NAMES for item in row[3].split())

    assert export_main(["--ckpt_path", str(run), "--output", str(tmp_path / "m.onnx")]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["mnist_bench.classes"]) == list(NAMES) and meta["mnist_bench.dataset"] == "toy3"
    assert meta["mnist_bench.mean"] == "0.2"


def test_the_dataset_s_own_files_are_checked(toy3, tmp_path, capsys):
    (toy3 / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    code, err = run_main(fit_args(toy3, tmp_path), capsys)
    assert code == 1 and "Traceback" not in err
    assert "FashionMNIST/raw" in err and "t10k-labels-idx1-ubyte" in err and "--dataset toy3" in err


def test_an_unknown_dataset_is_a_config_error(synthetic_data, tmp_path, capsys):
    code, err = run_main(fit_args(synthetic_data, tmp_path)[:-6] + ["--data.dataset=mnits"], capsys)
    assert code == 2 and "mnits" in err and "mnist" in err.split("mnits", 1)[1]
    with pytest.raises(ConfigError):
        dataset_spec("mnits")


def test_flips_follow_the_dataset_policy(toy3):
    from mnist_bench.data.datamodule import MNISTDataModule

    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[..., :14] = 255  # left half lit

    class Training:
        training = True

    for name, flips in (("toy3", True), ("mnist", False)):
        dm = MNISTDataModule(
            data_dir=str(toy3), dataset=name, augment=True, max_shift_px=0, max_rotate_deg=0, max_scale=0
        )
        dm.trainer = Training()
        out, _ = dm.on_after_batch_transfer((x, torch.zeros(64, dtype=torch.long)), 0)
        right_lit = (dm.info.denormalize(out)[..., 20] > 0.5).flatten().float().mean().item()
        assert (0.2 < right_lit < 0.8) if flips else right_lit == 0.0, (name, right_lit)


def test_a_model_built_without_a_datamodule_is_mnist_s():
    model = CNN()
    assert model.dataset.name == "mnist" and model.num_classes == 10


DATA_PACKAGE = '''
"""A DataModule of a user's own, outside mnist_bench."""
from mnist_bench.data.datamodule import MNISTDataModule


class HalfMNIST(MNISTDataModule):
    """MNIST with only the first half of the training split."""

    def _load(self, train):
        data = super()._load(train)
        if train:
            half = len(data.labels) // 2
            data.images, data.labels = data.images[:half], data.labels[:half]
        return data
'''


def test_a_datamodule_of_your_own_is_named_in_the_config_once_allowed(
    synthetic_data, tmp_path, monkeypatch, capsys
):
    user_package(tmp_path, monkeypatch, "toy_data", DATA_PACKAGE)
    config = tmp_path / "half.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        trainer: {{max_epochs: 1, default_root_dir: {tmp_path}, enable_progress_bar: false}}
        model: {{class_path: CNN}}
        data:
          class_path: toy_data.HalfMNIST
          init_args: {{data_dir: {synthetic_data}, val_size: 100, eval_batch_size: 100, batch_size: 50}}
        """)
    )
    code, err = run_main(["fit", "--config", str(config)], capsys)
    assert code == 2 and "--allow-imports toy_data" in err
    main(["fit", "--config", str(config), "--allow-imports", "toy_data"])
    metrics = json.loads((tmp_path / "lightning_logs" / "cnn" / "version_0" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["config"]["data"]["class_path"] == "toy_data.HalfMNIST"


OWN_DATA = '''
"""A dataset of a user's own: three classes, its own facts, read from the synthetic MNIST files."""
from mnist_bench.data.datamodule import MNISTDataModule, TensorImages
from mnist_bench.data.datasets import DatasetInfo


class ThreeDigits(MNISTDataModule):
    info = DatasetInfo("three_digits", ("zero", "one", "two"), mean=0.1, std=0.3)

    def _load(self, train):
        from torchvision.datasets import MNIST

        ds = MNIST(self.data_dir, train=train, download=False)
        keep = ds.targets < 3
        return TensorImages(ds.data[keep].unsqueeze(1).contiguous(), ds.targets[keep].long())
'''


def test_a_datamodule_with_its_own_facts_gets_its_own_run_folder_and_checkpoints_stay_with_it(
    synthetic_data, tmp_path, monkeypatch, capsys
):
    user_package(tmp_path, monkeypatch, "own_data", OWN_DATA)
    config = tmp_path / "three.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        trainer: {{max_epochs: 1, default_root_dir: {tmp_path}, enable_progress_bar: false}}
        model: {{class_path: CNN}}
        data:
          class_path: own_data.ThreeDigits
          init_args: {{data_dir: {synthetic_data}, val_size: 30, eval_batch_size: 50, batch_size: 30}}
        """)
    )
    main(["fit", "--config", str(config), "--allow-imports", "own_data"])
    run = tmp_path / "lightning_logs" / "cnn_three_digits" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").exists() and load_trained(run).num_classes == 3
    # `last` finds it through the DataModule's own facts
    main(["test", "--config", str(config), "--allow-imports", "own_data", "--ckpt_path", "last"])
    assert (tmp_path / "lightning_logs" / "cnn_three_digits" / "version_1" / "metrics.json").exists()
    # the same checkpoint on MNIST: one line, not a size-mismatch traceback
    capsys.readouterr()
    code, err = run_main(
        [
            "test",
            "--model",
            "CNN",
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            f"--data.data_dir={synthetic_data}",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err
    assert "trained on three_digits (3 classes)" in err and "the data is mnist" in err


OWN_TENSORS = '''
"""The README's recipe: a dataset of its own made in memory (no files at all), three classes of bars."""
import torch

from mnist_bench.data import TensorDataModule, TensorImages
from mnist_bench.data.datasets import DatasetInfo


class Bars(TensorDataModule):
    info = DatasetInfo("bars", ("vertical", "horizontal", "diagonal"), mean=0.05, std=0.2)

    def load(self, train):
        n = 240 if train else 60
        at = torch.randint(4, 24, (n,), generator=torch.Generator().manual_seed(int(train)))
        labels = torch.arange(n) % 3
        images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
        for i, (label, p) in enumerate(zip(labels.tolist(), at.tolist())):
            if label == 0:
                images[i, 0, :, p - 1 : p + 2] = 255
            elif label == 1:
                images[i, 0, p - 1 : p + 2, :] = 255
            else:
                images[i, 0] = (torch.eye(28).roll(p - 14, dims=1) * 255).to(torch.uint8)
        return TensorImages(images, labels)
'''


@pytest.mark.parametrize("recipe", ["load", "_load of MNISTDataModule"])
def test_the_readme_dataset_recipe_works_in_a_folder_without_mnist(recipe, tmp_path, monkeypatch):
    source = (
        OWN_TENSORS
        if recipe == "load"
        else OWN_TENSORS.replace(
            "from mnist_bench.data import TensorDataModule,", "from mnist_bench.data import MNISTDataModule,"
        )
        .replace("class Bars(TensorDataModule):", "class Bars(MNISTDataModule):")
        .replace("def load(", "def _load(")
    )
    user_package(tmp_path, monkeypatch, "bars_data", source)
    empty = tmp_path / "no_mnist_here"
    empty.mkdir()
    config = tmp_path / "bars.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        trainer: {{max_epochs: 1, default_root_dir: {tmp_path}, enable_progress_bar: false}}
        model: {{class_path: CNN}}
        data:
          class_path: bars_data.Bars
          init_args: {{data_dir: {empty}, val_size: 30, eval_batch_size: 30, batch_size: 30}}
        """)
    )
    main(["fit", "--config", str(config), "--allow-imports", "bars_data"])
    run = tmp_path / "lightning_logs" / "cnn_bars" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["dataset"] == "bars" and metrics["test/images"] == 60
    assert metrics["test/official"] is None, "no published test set to compare a dataset of one's own with"
    assert load_trained(run).dataset.class_names == ("vertical", "horizontal", "diagonal")
    assert list(empty.iterdir()) == [], "nothing fetched or written into the data folder"


def test_a_checkpoint_is_not_scored_or_resumed_on_other_data(toy3, tmp_path, capsys):
    main(fit_args(toy3, tmp_path))
    ckpt = tmp_path / "lightning_logs" / "cnn_toy3" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    for subcommand in ("test", "fit"):
        code, err = run_main(
            [
                subcommand,
                "--config",
                str(ROOT / "configs/cnn.yaml"),
                "--ckpt_path",
                str(ckpt),
                f"--data.data_dir={toy3}",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.max_epochs=2",
            ],
            capsys,
        )
        assert code == 2 and "trained on toy3" in err and "--data.dataset toy3" in err, err
    assert not (tmp_path / "lightning_logs" / "cnn").exists()


def test_a_saved_config_reruns_into_a_new_folder_with_its_own_checkpoints(synthetic_data, tmp_path):
    args = [
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        f"--data.data_dir={synthetic_data}",
        "--data.val_size=100",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *args])
    first = tmp_path / "lightning_logs" / "cnn" / "version_0"
    main(["fit", "--config", str(first / "config.yaml")])
    second = tmp_path / "lightning_logs" / "cnn" / "version_1"
    assert (second / "checkpoints" / "last.ckpt").exists()
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == sorted(
        p.name for p in (second / "checkpoints").iterdir()
    )
