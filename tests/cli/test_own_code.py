"""A researcher's own model and callback, in a package outside mnist_bench, train from a config once the
command line (--allow-imports) or the environment allows that package; a config alone cannot allow it."""

import json
import textwrap

import pytest

from mnist_bench.cli import main

from ..conftest import ROOT, run_main, user_package

TOY_PACKAGE = '''
"""A sixth model and a callback, outside mnist_bench: what a researcher writes."""
from pathlib import Path

from lightning.pytorch import Callback
from torch import nn

from mnist_bench.models.base import MNISTClassifier


class TinyMLP(MNISTClassifier):
    """One hidden layer on the flattened digit."""

    model_name = "tiny_mlp"

    def __init__(self, hidden: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters(logger=False)
        pixels = self.image_size ** 2 * self.adapt.in_chans
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, self.num_classes))


class EpochMarker(Callback):
    """Writes one line per finished training epoch."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module):
        with self.path.open("a") as f:
            f.write(f"epoch {trainer.current_epoch}\\n")
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The package ``toy_models`` on the import path, and a config (any file name) that trains its model."""
    user_package(tmp_path, monkeypatch, "toy_models", TOY_PACKAGE)
    config = tmp_path / "my experiment.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        trainer:
          max_epochs: 2
          callbacks:
            - class_path: toy_models.EpochMarker
              init_args: {{path: {tmp_path / "epochs.txt"}}}
        model:
          class_path: toy_models.TinyMLP
          init_args:
            hidden: 16
            optimizer:
              class_path: torch.optim.AdamW
              init_args: {{lr: 0.003}}
        data:
          batch_size: 50
        """)
    )
    return config


def test_a_config_alone_cannot_allow_its_own_package(toy, tiny_fit_args, tmp_path, capsys):
    code, err = run_main(["fit", "--config", str(toy), *tiny_fit_args], capsys)
    assert code == 2 and "Traceback" not in err
    first = err.splitlines()[0]
    assert "toy_models" in first and "--allow-imports toy_models" in first, first
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_your_own_model_and_callback_train_once_allowed(
    how, toy, tiny_fit_args, tmp_path, monkeypatch, capsys
):
    args = ["fit", "--config", str(toy), *tiny_fit_args]
    if how == "flag":
        args += ["--allow-imports", "toy_models"]
    else:
        monkeypatch.setenv("MNIST_BENCH_ALLOW_IMPORTS", "toy_models")
    main(args)
    metrics = json.loads(
        (tmp_path / "lightning_logs" / "tiny_mlp" / "version_0" / "metrics.json").read_text()
    )
    assert metrics["status"] == "ok" and metrics["model"] == "tiny_mlp" and metrics["epochs"] == 2
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/images"] > 0
    assert (tmp_path / "epochs.txt").read_text().splitlines() == ["epoch 0", "epoch 1"]
    assert (tmp_path / "lightning_logs" / "tiny_mlp" / "version_0" / "checkpoints" / "last.ckpt").exists()
    # the permission lasts for that command only: the next one, without it, is refused again
    monkeypatch.delenv("MNIST_BENCH_ALLOW_IMPORTS", raising=False)
    capsys.readouterr()  # the allowed run's output
    code, err = run_main(["fit", "--config", str(toy), *tiny_fit_args], capsys)
    assert code == 2 and "toy_models" in err.splitlines()[0]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("os", "'os' is not your own code"),
        ("subprocess.Popen", "'subprocess.Popen' is not your own code"),
        ("jsonargparse", "'jsonargparse' is not your own code"),
        ("my-models", "'my-models' is not a package or module name"),
        ("", "--allow-imports needs a package name"),
        (",", "--allow-imports needs a package name"),
    ],
)
def test_allow_imports_refuses_the_standard_library_and_bad_names(value, named, toy, tiny_fit_args, capsys):
    code, err = run_main(["fit", "--config", str(toy), *tiny_fit_args, f"--allow-imports={value}"], capsys)
    assert code == 2 and "Traceback" not in err
    assert named in err.splitlines()[0], err


def test_predict_and_export_load_your_own_model_once_allowed(toy, tiny_fit_args, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from mnist_bench.inference.export import main as export_main
    from mnist_bench.inference.predict import main as predict_main

    main(
        [
            "fit",
            "--config",
            str(toy),
            *tiny_fit_args,
            "--allow-imports",
            "toy_models",
            "--trainer.max_epochs=1",
        ]
    )
    run = tmp_path / "lightning_logs" / "tiny_mlp" / "version_0"
    digit = np.zeros((60, 40), dtype=np.uint8)
    digit[10:50, 15:25] = 255
    Image.fromarray(digit).save(tmp_path / "one.png")
    capsys.readouterr()
    assert predict_main([str(tmp_path / "one.png"), "--ckpt_path", str(run)]) == 2
    err = capsys.readouterr().err
    assert "toy_models.TinyMLP" in err and "--allow-imports toy_models" in err, err
    assert (
        predict_main([str(tmp_path / "one.png"), "--ckpt_path", str(run), "--allow-imports", "toy_models"])
        == 0
    )
    assert "one.png" in capsys.readouterr().out
    onnx = tmp_path / "tiny.onnx"
    assert export_main(["--ckpt_path", str(run), "--output", str(onnx), "--allow-imports=toy_models"]) == 0
    assert onnx.stat().st_size > 0


def test_a_package_named_like_the_project_is_not_the_project(tmp_path, tiny_fit_args, monkeypatch, capsys):
    """``mnist_bench_ext`` is a user's package: allowed by name, rebuilt from its own module by predict."""
    import numpy as np
    from PIL import Image

    from mnist_bench.inference.predict import main as predict_main

    package = tmp_path / "lab" / "mnist_bench_ext"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from mnist_bench.models import CNN\n\nclass MyCNN(CNN):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "lab"))
    config = str(ROOT / "configs" / "cnn.yaml")
    args = [
        "fit",
        "--config",
        config,
        *tiny_fit_args,
        "--model.class_path=mnist_bench_ext.MyCNN",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--model.init_args.scheduler=null",
    ]
    code, err = run_main(args, capsys)
    assert code == 2 and "--allow-imports mnist_bench_ext" in err.splitlines()[0]
    main([*args, "--allow-imports", "mnist_bench_ext"])
    run = tmp_path / "lightning_logs" / "cnn" / "version_0"
    Image.fromarray(np.pad(np.full((20, 6), 255, np.uint8), 4)).save(tmp_path / "one.png")
    capsys.readouterr()
    assert predict_main([str(tmp_path / "one.png"), "--ckpt_path", str(run)]) == 2
    assert "--allow-imports mnist_bench_ext" in capsys.readouterr().err
    assert (
        predict_main(
            [str(tmp_path / "one.png"), "--ckpt_path", str(run), "--allow-imports", "mnist_bench_ext"]
        )
        == 0
    )
