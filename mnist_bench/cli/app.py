"""``MNISTBenchCLI``: LightningCLI with the project's run folders, loggers, checkpoints and report, on its
public hooks only (``add_arguments_to_parser``, ``parse_arguments``, ``instantiate_classes``,
``instantiate_trainer``, ``after_<subcommand>``).

``fit`` ends with a test pass on the final weights (or, with ``--test_weights best``, on the best validated
epoch's), prints a one-row results table and writes ``metrics.json`` in
``lightning_logs/<model>/version_<n>/``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info

import mnist_bench.models  # noqa: F401  (registers the models for short class paths)
from mnist_bench.allowlist import restrict_config_imports
from mnist_bench.benchmark.report.table import print_rich_table
from mnist_bench.callbacks import (
    EpochLine,
    RunClock,
    RunProgressBar,
    RunReport,
    TestFigures,
    TestPredictions,
    TimingCallback,
)
from mnist_bench.callbacks.best import BestCheckpoint
from mnist_bench.callbacks.history import EpochHistory, run_history
from mnist_bench.callbacks.pruning import pruning_callbacks
from mnist_bench.cli.loggers import build_loggers, logger_names
from mnist_bench.cli.rundirs import (
    RUN_DIR_LINE,
    UNSUPPORTED_CKPT_PATHS,
    CompleteCheckpointIO,
    RunDir,
    check_checkpoint,
    newest_last_checkpoint,
    not_a_folder,
)
from mnist_bench.data.datamodule import MNISTDataModule, TensorDataModule
from mnist_bench.data.datasets import DEFAULT_DATASET, DatasetInfo
from mnist_bench.errors import ConfigError, UserFacingError, one_line, user_error_in
from mnist_bench.inference.checkpoints import resolve_checkpoint
from mnist_bench.lightning_overhead import NoProfiler
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.precision import detect, resolve

SUBCOMMANDS = ("fit", "validate", "test")
DEFAULT_SEED = 42
NOTHING_TO_TRAIN = ("max_epochs", "max_steps", "limit_train_batches")  # a fit with any of these at 0
BEST_FILENAME = "best-{epoch}"  # checkpoints/best-epoch=<n>.ckpt, kept by --test_weights best
DESCRIPTION = (
    "Train, validate or test with a model config: mnist-bench fit --config configs/cnn.yaml. Also: "
    "'mnist-bench data' fetches and verifies MNIST; 'mnist-bench predict --ckpt_path RUN IMAGES...' "
    "classifies image files; 'mnist-bench export --ckpt_path RUN --output M.onnx'; 'mnist-bench lr-find "
    "--config C' runs the learning-rate range test. --allow-imports PKG "
    "(or MNIST_BENCH_ALLOW_IMPORTS) lets a config name your own package's classes."
)


class SaveConfigToRunDir(SaveConfigCallback):
    """LightningCLI's config.yaml, written to the run's folder whatever the loggers (Lightning writes it to
    the first logger's directory, which for MLflow or W&B, or with logging off, is not the run's)."""

    def __init__(self, parser: Any, config: Any, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)
        self.run_dir = run_dir

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # a resumed run's config.yaml is replaced only once its checkpoint is restored and accepted
        # (on_train_start): a refused resume leaves the run's folder as it was
        if stage == "fit" and self.config.get("ckpt_path") and not self.already_saved:
            return
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().setup(trainer, pl_module, "fit")

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        path = self.run_dir / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)


def run_name(model_name: str, dataset: str | None) -> str:
    """The folder under lightning_logs: the model's name, with the dataset's after it unless it is MNIST
    (``cnn``, ``cnn_fashion_mnist``), so that ``--ckpt_path last`` never resumes a run on other data."""
    return model_name if dataset in (None, DEFAULT_DATASET) else f"{model_name}_{dataset}"


def runs_root(config: Any) -> Path:
    """The folder whose ``lightning_logs/`` holds the runs: ``trainer.default_root_dir``, else the current
    one."""
    return Path(config.trainer.get("default_root_dir") or os.getcwd())


def _class(class_path: str) -> type:
    module, _, name = str(class_path).rpartition(".")
    return getattr(importlib.import_module(module), name)


def configured_dataset(data: Any) -> str | None:
    """The dataset a config's data section names, before anything is built: a DataModule class's own ``info``
    (a :class:`DatasetInfo` class attribute), else its ``dataset`` argument."""
    if not hasattr(data, "get") or not data.get("class_path"):
        return None
    info = getattr(_class(data["class_path"]), "info", None)
    if isinstance(info, DatasetInfo):
        return info.name
    init_args = data.get("init_args")
    return init_args.get("dataset") if hasattr(init_args, "get") else None


class SafeLoadingParser(LightningArgumentParser):
    """LightningCLI's parser, with ``weights_only`` true by default where a subcommand takes it:
    ``--ckpt_path`` files are loaded with ``torch.load(weights_only=True)``, tensors and plain data, never
    code."""

    def add_method_arguments(self, *args: Any, **kwargs: Any) -> list[str]:
        added = super().add_method_arguments(*args, **kwargs)
        if "weights_only" in added:
            self.set_defaults(weights_only=True)
        return added


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during fit, test or validate, after Lightning's shutdown; the message says how to go on."""


class CtrlCSeen(Callback):
    """Whether the run ended on a KeyboardInterrupt (Lightning marks every failed run as interrupted)."""

    def __init__(self) -> None:
        self.seen = False

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.seen = self.seen or isinstance(exception, KeyboardInterrupt)


class MNISTBenchCLI(LightningCLI):
    """LightningCLI with the project's run-dir, logger, checkpoint and report defaults."""

    def __init__(self, *args: Any, allow_imports: list[str] | tuple[str, ...] = (), **kwargs: Any) -> None:
        # errors are raised to main() for a one-line message; no abbreviations, so a misspelt key is an error
        no_exit = {"exit_on_error": False, "allow_abbrev": False}
        kwargs.setdefault(
            "parser_kwargs",
            {
                **no_exit,
                "prog": "mnist-bench",
                "description": DESCRIPTION,
                **{cmd: dict(no_exit) for cmd in SUBCOMMANDS},
            },
        )
        kwargs.setdefault("save_config_callback", SaveConfigToRunDir)
        kwargs.setdefault("seed_everything_default", DEFAULT_SEED)
        kwargs.setdefault("parser_class", SafeLoadingParser)
        restrict_config_imports(allow_imports)
        self.run: RunDir | None = None  # decided once, before the Trainer is built (_choose_run_dir)
        self._resume_dir: Path | None = None  # the folder of the run fit resumes
        self._ckpt_dataset: DatasetInfo | None = None
        self._ckpt_history: list[dict] = []  # a tested or validated checkpoint's (fit restores its own)
        self._ctrl_c = CtrlCSeen()
        try:
            super().__init__(
                MNISTClassifier,
                TensorDataModule,
                *args,
                subclass_mode_model=True,
                subclass_mode_data=True,
                **kwargs,
            )
        except SystemExit as stop:
            # Lightning 2.6's _call_and_handle_interrupt ends a run stopped by Ctrl-C with sys.exit(1), after
            # its graceful shutdown (since PR #19976, 2.4.0; exit codes: issue #19916); the convention says
            # 130
            if stop.code == 1 and self._ctrl_c.seen:
                raise RunInterrupted(self._how_to_go_on()) from None
            raise

    def _how_to_go_on(self) -> str:
        """What an interrupted run leaves, and the command that goes on from there."""
        if self.subcommand != "fit":
            done = "tested" if self.subcommand == "test" else "validated"
            return f"nothing was {done} to the end; rerun the same command"
        last = self.run.checkpoints / "last.ckpt" if self.run is not None else None
        if last is None or not last.exists():
            return "no epoch was checkpointed yet; rerun the same command to start again"
        return (
            f"{last} holds the last complete epoch; to go on from it, rerun the same command with "
            "--ckpt_path last"
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: args for name, args in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--logger",
            type=str | None,
            default=None,
            help=(
                "experiment loggers by short name, comma-separated: tensorboard (the default), csv, "
                "mlflow, wandb; each writes into the run's folder. Full classes go under "
                "trainer.logger"
            ),
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # One checkpoint per run, the newest, saved at the end of each training epoch (so it holds the whole
        # epoch, train metrics too), and last.ckpt linked to it. (With a monitor, Lightning 2.6 refreshes
        # last.ckpt only when the monitored metric improves, which would resume a killed run from a stale
        # epoch: Lightning-AI/pytorch-lightning PR #21244, 2.6.0; keep this while that holds.)
        parser.set_defaults(
            {
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": "link",
                "checkpoint.save_on_train_epoch_end": True,
                # a config's data section may name another DataModule; without one, MNIST's
                "data": {"class_path": f"{MNISTDataModule.__module__}.{MNISTDataModule.__name__}"},
            }
        )
        # the DataModule owns its dataset's facts (statistics, class names, image size); the model is built
        # for them
        parser.link_arguments(
            "data.info", "model.init_args.dataset", compute_fn=DatasetInfo.as_dict, apply_on="instantiate"
        )
        parser.add_argument(
            "--test_weights",
            type=Literal["last", "best"],
            default="last",
            help=(
                "the weights fit's closing test scores: last (the final epoch's) or best (the epoch "
                "with the best --best_monitor on validation, kept in checkpoints/best-epoch=<n>.ckpt)"
            ),
        )
        parser.add_argument(
            "--best_monitor",
            type=str,
            default="val/acc",
            help=(
                "the validation metric that picks the best epoch for --test_weights best: val/acc or "
                "val/f1 (higher is better), val/loss (lower is better); the detector's val/iou "
                "(higher) and val/fallback_rate (lower). Checked at the sanity check (with "
                "num_sanity_val_steps 0, at the first validation)"
            ),
        )

    # --- parsing: refuse what is unsafe or misleading, and decide the run's folder
    # --------------------------------
    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("subcommand"):
            config = self.config[self.config.subcommand]
            self._check_config(config, self.config.subcommand)
            self._choose_checkpoint(config, self.config.subcommand)
        else:  # built with run=False (lr-find, the compile probe): fit's recipe, under fit's checks
            self._check_config(self.config, "fit")

    def _check_config(self, config: Any, subcommand: str) -> None:
        """Settings that would make a run unsafe or its result misleading are refused before anything is read
        or built."""
        if "weights_only" in config and config.get("weights_only") is not True:
            raise ConfigError(
                "weights_only cannot be turned off: mnist-bench loads every checkpoint as tensors and "
                "plain data only (torch.load(weights_only=True)), never as code. Fix: remove "
                "weights_only from the config and the arguments"
            )
        if config.get("ckpt_path") in UNSUPPORTED_CKPT_PATHS:
            raise ConfigError(
                f"--ckpt_path {config['ckpt_path']} is not supported: each run keeps its newest "
                "checkpoint (and with --test_weights best its best, checkpoints/best-epoch=<n>.ckpt). "
                "Fix: --ckpt_path last (the newest checkpoint of this model) or a .ckpt path"
            )
        root = runs_root(config)
        blocked = not_a_folder(root)
        if blocked is not None:
            raise ConfigError(
                f"trainer.default_root_dir {root}: {blocked} is a file, and runs are written into "
                "folders there. Fix: a default_root_dir whose path is all folders (created if missing)"
            )
        if config.get("ckpt_path") == "":
            raise ConfigError("ckpt_path is empty. Fix: a .ckpt file, a run folder, or last")
        checkpoint = config.get("checkpoint") or {}
        for key in ("every_n_train_steps", "train_time_interval"):
            if checkpoint.get(key):
                raise ConfigError(
                    f"checkpoint.{key}: mid-epoch checkpoints are not supported (a run's clock, "
                    "history and resume work per epoch). Fix: leave it out; a checkpoint is written "
                    "after every epoch"
                )
        trainer = config.get("trainer") or {}
        if subcommand != "fit" and config.get("test_weights") == "best":
            raise ConfigError(
                f"test_weights best chooses the weights fit tests; {subcommand} scores the checkpoint "
                "it is given. Fix: --ckpt_path <run>/checkpoints/best-epoch=<n>.ckpt"
            )
        if subcommand == "fit" and config.get("test_weights") == "best":
            if not str(config.get("best_monitor", "")).startswith("val/"):
                raise ConfigError(
                    f"best_monitor {config.get('best_monitor')!r}: the best epoch is picked on a "
                    "validation metric. Fix: val/acc, val/f1 or val/loss"
                )
            if trainer.get("limit_val_batches") in (0, 0.0):
                raise ConfigError(
                    "test_weights best picks the best epoch on validation, and "
                    "trainer.limit_val_batches is 0. Fix: validate, or test_weights last"
                )
        if subcommand == "fit" and any(trainer.get(key) in (0, 0.0) for key in NOTHING_TO_TRAIN):
            raise ConfigError(
                "trainer.max_epochs, max_steps or limit_train_batches of 0 trains nothing, and its test "
                "would score an untrained model. Fix: train at least one batch, or use mnist-bench test "
                "--ckpt_path"
            )

    def _choose_checkpoint(self, config: Any, subcommand: str) -> None:
        """``--ckpt_path last`` is the newest run of this model (on this dataset) that has a ``last.ckpt``,
        for every subcommand (plain LightningCLI would look in the new, empty version dir, and test or start
        over from random weights). It is resolved before LightningCLI reads the checkpoint's hyperparameters,
        so the model is built as it was trained; ``fit`` continues in that run's folder. Any checkpoint is
        read once here, as tensors and plain data, so that a damaged or unsafe one stops the command before
        anything is built."""
        self._ckpt_dataset, self._ckpt_history = None, []
        given = config.get("ckpt_path")
        if given == "last" or (given is not None and Path(given).is_dir()):
            name = run_name(
                _class(config.model.class_path).model_name, configured_dataset(config.get("data"))
            )
            root = runs_root(config)
            if given == "last":
                _, path = newest_last_checkpoint(root, name, subcommand)
            else:  # a run dir, as predict and export take it: its last.ckpt
                path = resolve_checkpoint(Path(given).resolve())  # through links to the run's own folder
            config.ckpt_path = str(path)
            if (
                subcommand == "fit"
            ):  # goes on in that run's folder if it is one of this root's (_choose_run_dir)
                self._resume_dir = path.parent.parent if path.parent.name == "checkpoints" else None
            print(f"{'resuming' if subcommand == 'fit' else subcommand + ' with'} {path}", file=sys.stderr)
        if config.get("ckpt_path") is not None:
            hparams, self._ckpt_history = check_checkpoint(config.ckpt_path)
            self._ckpt_dataset = DatasetInfo.from_dict(hparams.get("dataset"))

    def _choose_run_dir(self, config: Any) -> RunDir:
        """The run's folder, named for the model and the dataset that were built (a checkpoint's class wins
        over ``--model``): the resumed run's for ``fit --ckpt_path last`` (or that run's folder), else the
        next version."""
        return RunDir.choose(
            runs_root(config), run_name(self.model.model_name, self.model.dataset.name), self._resume_dir
        )

    def _check_checkpoint_fits_the_data(self) -> None:
        """A checkpoint is scored or resumed only on the dataset it was trained on."""
        trained = self._ckpt_dataset
        data = self.model.dataset
        if trained is not None and (trained.name, trained.class_names) != (data.name, data.class_names):
            raise ConfigError(
                f"the checkpoint was trained on {trained.name} ({trained.num_classes} classes) and the "
                f"data is {data.name} ({data.num_classes} classes). Fix: --data.dataset {trained.name} "
                "(or the DataModule it was trained with)"
            )

    # --- building
    # ------------------------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        """A value that the model, DataModule or Trainer rejects when it is built is a config error (exit
        2)."""
        try:
            super().instantiate_classes()
        except (ConfigError, UserFacingError):
            raise
        except (ValueError, TypeError, MisconfigurationException) as err:
            if user_error_in(err) is not None:
                raise
            raise ConfigError(
                f"{one_line(err)} (while building the model, data or trainer from the config)"
            ) from err

    def instantiate_trainer(self, **kwargs: Any):
        """The Trainer with the run's loggers, the resolved precision, the quiet profiler and the report
        callbacks; anything the config sets explicitly wins."""
        config = self._config()
        trainer_config = {**self.config_init.get(str(self.subcommand), self.config_init)["trainer"], **kwargs}
        self._check_checkpoint_fits_the_data()
        self.run = self._choose_run_dir(config)
        self.save_config_kwargs = {**self.save_config_kwargs, "run_dir": self.run.path}
        overrides: dict[str, Any] = {
            "logger": self._loggers(trainer_config.get("logger"), config.get("logger")),
            "profiler": trainer_config.get("profiler") or NoProfiler(),
        }
        rank_zero_info(f"{RUN_DIR_LINE}{self.run.path}")
        self._hardware = detect(trainer_config.get("accelerator") or "auto")
        model_class = type(self.model)
        overrides["precision"], reason = resolve(
            trainer_config.get("precision"),
            self._hardware,
            model_class.bf16_on_cpu,
            model_class.mixed_precision,
        )
        rank_zero_info(f"mnist-bench: {reason}")  # beside Lightning's own "GPU available: ..." lines
        given = trainer_config.get("callbacks") or []
        given = list(given) if isinstance(given, list) else [given]
        overrides["callbacks"] = given + self._run_callbacks(trainer_config, given)
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):  # a user's own checkpoint IO wins
            overrides["plugins"] = [*plugins, CompleteCheckpointIO()]
        self._checkpoints_in_the_run_dir(overrides["callbacks"])
        return super().instantiate_trainer(**{**kwargs, **overrides})

    def _checkpoints_in_the_run_dir(self, callbacks: list) -> None:
        """Checkpoints go in the run's folder, whatever the loggers, unless a checkpoint callback names its
        own."""
        config_init = self.config_init.get(str(self.subcommand), self.config_init)
        for callback in [*callbacks, config_init.get("checkpoint")]:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.run.checkpoints)

    def _config(self) -> Any:
        return self.config.get(str(self.subcommand), self.config)

    def _loggers(self, given: Any, shortcut: str | None) -> list[Logger] | bool:
        """``--logger``'s loggers (TensorBoard when neither it nor ``trainer.logger`` is set), then those
        given in full under ``trainer.logger``; ``trainer.logger: false`` turns logging off (the run's folder
        stays)."""
        if given is False:
            if shortcut is not None:
                raise ConfigError(
                    f"--logger {shortcut} and trainer.logger false contradict each other. Fix: drop "
                    "one of them"
                )
            return False
        from_config = [] if given in (None, True) else (list(given) if isinstance(given, list) else [given])
        names = logger_names(shortcut) if shortcut or not from_config else []
        return build_loggers(names, self.run) + from_config or False

    def _run_callbacks(self, trainer_config: dict[str, Any], given: list) -> list:
        config = self._config()
        optimizer = config.model.init_args.get("optimizer") if "init_args" in config.model else None
        lr = optimizer.get("init_args", {}).get("lr") if hasattr(optimizer, "get") else None
        info = {
            "seed": config.get("seed_everything"),
            "batch_size": getattr(self.datamodule, "batch_size", None),
            "lr": lr,
            "hardware": self._hardware.name,
            "config": self._config_dict(),
        }
        if self.subcommand in ("test", "validate") and config.get("ckpt_path"):
            info["tested_weights"] = {"which": "checkpoint", "checkpoint": str(config.ckpt_path)}
        history = EpochHistory() if self.subcommand in ("fit", None) else EpochHistory(self._ckpt_history)
        callbacks: list = [
            TimingCallback(),
            history,
            RunReport(self.run.path, info),
            TestPredictions(self.run.path),
            self._ctrl_c,
        ]
        if self.subcommand == "fit":
            callbacks += (
                pruning_callbacks()
            )  # a sweep's trial reports to its study (none for an ordinary run)
        if (
            self.subcommand in ("fit", None) and config.get("test_weights") == "best"
        ):  # None: built with run=False
            monitor = config.get("best_monitor")
            callbacks.append(
                BestCheckpoint(
                    dirpath=str(self.run.checkpoints),
                    filename=BEST_FILENAME,
                    monitor=monitor,
                    save_top_k=1,
                    save_last=False,
                    save_on_train_epoch_end=False,
                )
            )
        if self.subcommand == "test":  # fit gets it for its closing test pass (after_fit)
            callbacks.append(TestFigures(self.run.path))
        if self.subcommand in ("fit", None):
            callbacks.append(RunClock())  # the run's remaining time, for the epoch lines and the bar
        if trainer_config.get("enable_progress_bar") is False:
            callbacks.append(EpochLine())
        elif not any(isinstance(cb, ProgressBar) for cb in given):
            callbacks.append(RunProgressBar())
        return callbacks

    def _config_dict(self) -> dict[str, Any]:
        import yaml

        full = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_link_targets=False))
        return full.get(str(self.subcommand), full) if self.subcommand else full

    # --- after each subcommand
    # -----------------------------------------------------------------------------------
    def after_fit(self) -> None:
        if not self.trainer.interrupted:
            self._report_info()["tested_weights"] = self._choose_tested_weights()
            # the pictures come from the closing test pass; attached only now, they cost no training step
            # anything
            self.trainer.callbacks.append(TestFigures(self.run.path))
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            self._print_result()
        self._finish_ranks_together()

    def _report_info(self) -> dict[str, Any]:
        report = next((cb for cb in self.trainer.callbacks if isinstance(cb, RunReport)), None)
        return report.info if report is not None else {}

    def _choose_tested_weights(self) -> dict[str, Any]:
        """The weights the closing test scores, and what metrics.json says of them. ``last``: the model as
        training left it (with weight averaging on, the averaged weights). ``best``: the best validated
        epoch's checkpoint, loaded into the model (its averaged weights where averaging is on); the history
        stays the whole run's."""
        history = run_history(self.trainer)
        last = {"which": "last", "epoch": history[-1]["epoch"] if history else None}
        if self._config().get("test_weights") != "best":
            return last
        best = next(
            (
                cb
                for cb in self.trainer.checkpoint_callbacks
                if isinstance(cb, ModelCheckpoint) and cb.filename == BEST_FILENAME
            ),
            None,
        )
        if best is None or not best.best_model_path:
            rank_zero_info(
                "mnist-bench: no epoch was validated, so there is no best checkpoint: testing the last "
                "weights"
            )
            return {**last, "note": "test_weights best asked for, no epoch validated"}
        checkpoint = torch.load(best.best_model_path, map_location=self.model.device, weights_only=True)
        self.model.load_state_dict(checkpoint["state_dict"])
        return {
            "which": "best",
            "epoch": int(checkpoint["epoch"]),
            "monitor": best.monitor,
            "score": float(best.best_model_score),
            "checkpoint": str(best.best_model_path),
        }

    def after_test(self) -> None:
        self._print_result()
        self._finish_ranks_together()

    def after_validate(self) -> None:
        self._finish_ranks_together()

    def _finish_ranks_together(self) -> None:
        """Under DDP the ranks finish together: rank 0 may still be drawing figures when the others are done,
        and a process that exits while its process group is alive aborts (torchrun then kills the job)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.trainer.strategy.barrier("mnist_bench_done")
            dist.destroy_process_group()

    def _print_result(self) -> None:
        report = next((cb for cb in self.trainer.callbacks if isinstance(cb, RunReport)), None)
        if report is None or report.metrics is None or not self.trainer.is_global_zero:
            return
        from rich.markup import escape

        # the table is printed through rich: a name such as "[red]x" is shown as it is, never read as markup
        metrics = report.metrics
        shown = {key: escape(value) if isinstance(value, str) else value for key, value in metrics.items()}
        print_rich_table([shown], title=escape(f"mnist-bench: {metrics['model']} on {metrics['device']}"))
        loggers = ", ".join(type(logger).__name__ for logger in self.trainer.loggers) or "no logger"
        print(
            f"run dir: {report.metrics['run_dir']}  (metrics.json, config.yaml, checkpoints/, figures;"
            f" {loggers})"
        )
