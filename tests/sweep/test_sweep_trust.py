"""A sweep against inputs made by someone else: a space file that tries to run code, a study continued with
another recipe, a study whose workers were killed, storage URLs with secrets, a results folder that is a file.
The trials' runs are replaced by a stand-in that writes a metrics.json, so each case takes a moment."""

import json
import subprocess
from pathlib import Path

import pytest

from mnist_bench.cli.rundirs import RUN_DIR_LINE
from mnist_bench.sweep import optuna_parts
from mnist_bench.sweep.main import main as sweep_main

from ..conftest import ROOT

optuna = pytest.importorskip("optuna")

CNN_CONFIG = str(ROOT / "configs" / "cnn.yaml")
VIT_CONFIG = str(ROOT / "configs" / "vit.yaml")
SPACE = "params: {model.init_args.dropout: {low: 0.0, high: 0.5}}\n"
EVILMOD = (
    "from pathlib import Path\nPath(__file__).with_name('IMPORTED').write_text('ran')\nclass Marker: pass\n"
)


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """Each trial's ``mnist-bench fit`` stands in as a run dir with a metrics.json; the commands are kept."""
    commands: list[list[str]] = []

    def run_logged(cmd, log_file, timeout_s=None, keep=lambda line: False, env=None, **kwargs):
        commands.append(cmd)
        run_dir = tmp_path / "fake" / f"run_{len(commands)}"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(
            json.dumps({"status": "ok", "history": [{"val/acc": 0.5}], "time/fit_s": 1.0, "epochs": 1})
        )
        return 0, [], [f"{RUN_DIR_LINE}{run_dir}"]

    monkeypatch.setattr("mnist_bench.benchmark.jobs.runner.run_logged", run_logged)
    return commands


def sweep(
    tmp_path: Path,
    space: str,
    *extra: str,
    config: str = CNN_CONFIG,
    trials: int = 1,
    fit: tuple[str, ...] = (),
) -> int:
    space_path = tmp_path / "space.yaml"
    space_path.write_text(space)
    return sweep_main(
        [
            "--config",
            config,
            "--space",
            str(space_path),
            "--trials",
            str(trials),
            "--study",
            "s",
            "--results",
            str(tmp_path / "results"),
            "--runs_dir",
            str(tmp_path / "runs"),
            *extra,
            "--",
            *fit,
        ]
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


ATTACKS = {
    "allow-imports key": (
        "allow-imports: {choices: [evilmod]}\n"
        "trainer.callbacks: {choices: ['[{class_path: evilmod.Marker}]']}",
        "config keys only",
    ),
    "another config": ("config: {choices: [other.yaml]}", "config keys only"),
    "an option as a key": ("--print_config: {choices: [true]}", "config keys only"),
    "a key with an option in it": (
        "model.init_args.dropout=0.1 --allow-imports: {choices: [1]}",
        "not a config key",
    ),
    "a class path in a YAML string": (
        "trainer.callbacks: {choices: ['[{class_path: evilmod.Marker}]']}",
        "'evilmod.Marker' names code outside",
    ),
    "a class path dict": (
        "trainer.callbacks: {choices: [[{class_path: evilmod.Marker}]]}",
        "names code outside",
    ),
    "init_args holding a class path": (
        "model.init_args.scheduler: {choices: [{class_path: "
        "mnist_bench.models.schedulers.OneCycle, init_args: {anneal: "
        "{class_path: evilmod.Marker}}}]}",
        "'evilmod.Marker' names code outside",
    ),
    "a class given by name": ("trainer.logger: {choices: [evilmod.Marker]}", "names code outside"),
    "a value that reads as an option": (
        "trainer.precision: {choices: ['--allow-imports=evilmod']}",
        "reads as a command-line option",
    ),
    "a value naming a config file": ("model: {choices: [evil.yaml]}", "names a config file"),
    "a config file without an extension": ("trainer: {choices: [evilcfg]}", "names a config file"),
    "a section given as a path": ("data: {choices: [./nowhere/cfg]}", "names a config file"),
    "a checkpoint aimed at another run": (
        "trainer.callbacks: {choices: [[{class_path: lightning.pytorch.callbacks."
        "ModelCheckpoint, init_args: {dirpath: /elsewhere/checkpoints}}]]}",
        "'dirpath' decides where files are written",
    ),
    "the same in a YAML string": (
        "trainer.callbacks: {choices: ['[{class_path: lightning.pytorch.callbacks."
        "ModelCheckpoint, init_args: {dirpath: x, filename: last}}]']}",
        "decides where files are written",
    ),
    "the run's folder as a key": (
        "trainer.default_root_dir: {choices: [/elsewhere]}",
        "'default_root_dir' decides where files are written",
    ),
}

BAD_SPACES = {
    "a self-referring anchor": (
        b"params:\n  model.init_args.hidden: &x {choices: [*x]}\n",
        "refers to itself",
    ),
    "a negative step": (
        b"params: {model.init_args.hidden: {low: 1, high: 5, step: -1}}\n",
        "step must be above 0",
    ),
    "a zero step": (
        b"params: {model.init_args.hidden: {low: 1, high: 5, step: 0}}\n",
        "step must be above 0",
    ),
    "bytes": (
        b"params: {model.init_args.hidden: {choices: [!!binary aGVsbG8=]}}\n",
        "not a plain value (bytes)",
    ),
    "a set": (b"params: {model.init_args.hidden: {choices: [!!set {a, b}]}}\n", "not a plain value (set)"),
    "a date": (b"params: {model.init_args.hidden: {choices: [2001-12-14]}}\n", "not a plain value (date)"),
    "a huge value": (
        b"params: {trainer.precision: {choices: [" + b"x" * 20_000 + b"]}}\n",
        "characters long",
    ),
    "not UTF-8": (b"# r\xe9glage\nparams: {model.init_args.hidden: {choices: [64]}}\n", "not UTF-8 text"),
}


@pytest.mark.parametrize("bad", BAD_SPACES, ids=list(BAD_SPACES))
def test_a_malformed_space_is_one_line_naming_the_file_before_any_trial(bad, tmp_path, capsys, fake_runs):
    content, message = BAD_SPACES[bad]
    space = tmp_path / "space.yaml"
    space.write_bytes(content)
    code = sweep_main(
        [
            "--config",
            CNN_CONFIG,
            "--space",
            str(space),
            "--trials",
            "1",
            "--study",
            "s",
            "--results",
            str(tmp_path / "results"),
            "--runs_dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    err = one_line_error(capsys)
    assert message in err and "space.yaml" in err and len(err) < 400, err
    assert not fake_runs


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_a_space_that_would_run_code_is_refused_before_any_trial(
    attack, tmp_path, monkeypatch, capsys, fake_runs
):
    params, message = ATTACKS[attack]
    (tmp_path / "evilmod.py").write_text(EVILMOD)
    (tmp_path / "evilcfg").write_text(
        "callbacks: [{class_path: evilmod.Marker}]\n"
    )  # a config by another name
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MNIST_BENCH_ALLOW_IMPORTS", raising=False)
    assert sweep(tmp_path, "params:\n  " + params.replace("\n", "\n  ") + "\n") == 2
    err = one_line_error(capsys)
    assert message in err and "space.yaml" in err
    assert not fake_runs, "no trial started"
    assert not (tmp_path / "IMPORTED").exists()


def test_the_replayed_attack_runs_nothing_in_a_real_trial(synthetic_data, tmp_path):
    """The attack from the review, end to end in a subprocess, with the module beside the command."""
    (tmp_path / "evilmod.py").write_text(EVILMOD)
    (tmp_path / "space.yaml").write_text(
        "params:\n  allow-imports: {choices: [evilmod]}\n"
        "  trainer.callbacks: {choices: ['[{class_path: evilmod.Marker}]']}\n"
    )
    done = subprocess.run(
        [
            str(Path(__import__("sys").executable)),
            "-m",
            "mnist_bench",
            "sweep",
            "--config",
            CNN_CONFIG,
            "--space",
            "space.yaml",
            "--trials",
            "1",
            "--data_dir",
            str(synthetic_data),
            "--",
            "--trainer.max_epochs=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert "config keys only" in done.stderr
    assert not (tmp_path / "IMPORTED").exists()
    assert not (tmp_path / "lightning_logs").exists(), "no trial ran"


def test_the_sweeps_own_allowlist_reaches_its_trials(tmp_path, monkeypatch, fake_runs):
    (tmp_path / "mylab.py").write_text("class Marker: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MNIST_BENCH_ALLOW_IMPORTS", raising=False)
    space = "params: {trainer.callbacks: {choices: ['[{class_path: mylab.Marker}]']}}\n"
    assert sweep(tmp_path, space, "--allow-imports", "mylab") == 0
    assert "--allow-imports=mylab" in fake_runs[0]
    assert sum(arg.startswith("--allow-imports") for arg in fake_runs[0]) == 1


def test_a_study_refuses_another_recipe(tmp_path, capsys, fake_runs):
    assert sweep(tmp_path, SPACE, trials=1) == 0
    capsys.readouterr()
    assert sweep(tmp_path, SPACE, config=VIT_CONFIG, trials=2) == 2
    err = one_line_error(capsys)
    assert "was run with the config" in err and "vit.yaml" in err
    assert sweep(tmp_path, SPACE, trials=2, fit=("--trainer.max_epochs=1",)) == 2
    assert "--trainer.max_epochs=1" in one_line_error(capsys)
    assert sweep(tmp_path, "params: {model.init_args.dropout: {low: 0.0, high: 0.9}}\n", trials=2) == 2
    assert "another search space" in one_line_error(capsys)
    assert len(fake_runs) == 1, "no refused command ran a trial"
    assert sweep(tmp_path, SPACE, "--data_dir", str(tmp_path / "elsewhere"), trials=2) == 0, (
        "the data folder may differ between machines"
    )
    assert len(fake_runs) == 2


def test_a_study_refuses_a_recipe_whose_included_file_changed(tmp_path, capsys, fake_runs):
    """A config's section given as a file, or a --config after --, counts by its content, not its name."""
    import yaml

    cnn = yaml.safe_load(Path(CNN_CONFIG).read_text())
    (tmp_path / "inner_model.yaml").write_text(yaml.safe_dump(cnn.pop("model")))
    outer = tmp_path / "outer.yaml"
    outer.write_text(yaml.safe_dump({**cnn, "model": "inner_model.yaml"}))
    assert sweep(tmp_path, SPACE, config=str(outer), trials=1) == 0
    inner = (tmp_path / "inner_model.yaml").read_text()
    (tmp_path / "inner_model.yaml").write_text(inner.replace("hidden: 128", "hidden: 16"))
    capsys.readouterr()
    assert sweep(tmp_path, SPACE, config=str(outer), trials=2) == 2
    assert "was run with the config" in one_line_error(capsys)
    assert len(fake_runs) == 1
    extra, second = tmp_path / "extra.yaml", tmp_path / "second"
    extra.write_text("trainer: {max_epochs: 2}\n")
    second.mkdir()
    assert sweep(second, SPACE, trials=1, fit=(f"--config={extra}",)) == 0
    extra.write_text("trainer: {max_epochs: 1}\n")
    capsys.readouterr()
    assert sweep(second, SPACE, trials=2, fit=(f"--config={extra}",)) == 2
    assert "the arguments after --" in one_line_error(capsys)
    assert len(fake_runs) == 2


def test_trials_of_killed_workers_do_not_count_as_failures(tmp_path, fake_runs):
    (tmp_path / "results").mkdir()
    url = f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for _ in range(3):
        trial = study.ask()
        trial.set_user_attr("error", "its worker was killed")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert sweep(tmp_path, SPACE, trials=1) == 0
    assert sum(t.state.name == "COMPLETE" for t in optuna.load_study(study_name="s", storage=url).trials) == 1


def test_failed_runs_still_stop_a_hopeless_study(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        "mnist_bench.benchmark.jobs.runner.run_logged", lambda cmd, *a, **k: (1, ["mnist-bench: boom"], [])
    )
    assert sweep(tmp_path, SPACE, trials=1) == 1
    assert "3 trials failed in their runs" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://alice:s3cr@t@127.0.0.1:9/optuna", "s3cr@t"),
        ("postgresql://127.0.0.1:9/optuna?user=alice&password=hunter2", "hunter2"),
    ],
)
def test_storage_secrets_never_reach_the_output(url, secret, tmp_path, capsys):
    assert secret not in optuna_parts.redact(url) and "***" in optuna_parts.redact(url)
    assert sweep(tmp_path, SPACE, "--storage", url) == 1
    err = one_line_error(capsys)
    assert secret not in err and "***" in err and "@t@" not in err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:hunter@2:SuperSecretTail@db.lab:5432/optuna",
        "postgresql://alice:a@bcdef@127.0.0.1:1/db",
    ],
)
def test_a_password_with_an_unencoded_at_sign_is_refused_before_the_driver_sees_it(url, tmp_path, capsys):
    """SQLAlchemy ends the password at its first '@' and sends the rest on as the host (to DNS, into
    messages)."""
    assert sweep(tmp_path, SPACE, "--storage", url) == 1
    err = one_line_error(capsys)
    password = url.split("://alice:")[1].rsplit("@", 1)[0]
    for piece in {password, *password.split("@"), *password.split(":")}:
        assert len(piece) < 3 or piece not in err, (piece, err)
    assert "%40" in err and "***" in err, err


def test_a_sqlite_url_argument_the_driver_ignores_is_one_line(tmp_path, capsys):
    """SQLAlchemy warns and drops ?password= on a SQLite URL; the sweep refuses it before any trial."""
    url = f"sqlite:///{tmp_path / 'x.db'}?password=hunter2&timeout=5"
    assert sweep(tmp_path, SPACE, "--storage", url) == 1
    err = one_line_error(capsys)
    assert (
        "hunter2" not in err
        and "'password'" in err
        and err.count("Fix:") == 1
        and "Fix: drop" in err
        and "Warning" not in err
    ), err
    assert not (tmp_path / "runs").exists()


def test_a_results_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "results").write_text("mine")
    assert sweep(tmp_path, SPACE) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert (tmp_path / "results").read_text() == "mine"


def test_no_live_study_is_tracked_in_git():
    """A clone's first sweep must start its own study, not write into one committed with the results."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "*.db"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/sweeps/cnn/optuna.db"], cwd=ROOT)
    assert ignored.returncode == 0
