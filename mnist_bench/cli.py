"""The command line: ``mnist-bench {fit,validate,test} --config configs/<model>.yaml``, and ``mnist-bench data``,
``mnist-bench predict`` (image files) and ``mnist-bench export`` (ONNX).

``fit`` ends with a test pass on the final weights, prints a one-row results table and writes ``metrics.json`` in
``lightning_logs/<model>/version_<n>/``.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info

import mnist_bench.models  # noqa: F401  (registers the models for short class paths)
from mnist_bench.allowlist import allowed_imports, import_refusal, restrict_config_imports
from mnist_bench.benchmark.table import print_rich_table
from mnist_bench.callbacks import EpochLine, RunReport, TestFigures, TimingCallback
from mnist_bench.data.datamodule import MNISTDataModule
from mnist_bench.errors import ConfigError, UserFacingError
from mnist_bench.inference import load_failure
from mnist_bench.loggers import build_loggers, logger_names, next_version
from mnist_bench.models.base import MNISTClassifier
from mnist_bench.precision import detect, resolve
from mnist_bench.profiling import NoProfiler

SUBCOMMANDS = ("fit", "validate", "test")
# subcommands of our own, outside LightningCLI (its `predict` on the test set gives way to ours on image files)
TOOLS = {"data": "mnist_bench.data.fetch", "predict": "mnist_bench.predict", "export": "mnist_bench.export"}
DEFAULT_SEED = 42
# Lightning's special --ckpt_path values that name no checkpoint this project writes ("best" needs a monitored metric)
UNSUPPORTED_CKPT_PATHS = ("best", "hpc", "registry")
NOTHING_TO_TRAIN = ("max_epochs", "max_steps", "limit_train_batches")  # a fit with any of these at 0
# disk full, file too large, read-only file system, permission denied, quota exceeded
WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


class SaveConfigToRunDir(SaveConfigCallback):
    """LightningCLI's config.yaml, written to the run's folder whatever the loggers (Lightning writes it to the first
    logger's directory, which for MLflow or W&B, or with logging off, is not the run's)."""

    def __init__(self, parser: Any, config: Any, run_dir: Callable[[], Path], **kwargs: Any) -> None:
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        path = Path(self.run_dir()) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)


class MNISTBenchCLI(LightningCLI):
    """LightningCLI with the project's run-dir, logger, checkpoint and report defaults."""

    def __init__(self, *args: Any, allow_imports: list[str] | tuple[str, ...] = (), **kwargs: Any) -> None:
        # errors are raised to main() for a one-line message; no abbreviations, so a misspelt key is an error
        no_exit = {"exit_on_error": False, "allow_abbrev": False}
        description = ("Train, validate or test with a model config: mnist-bench fit --config configs/cnn.yaml. "
                       "Also: 'mnist-bench data' fetches and verifies MNIST; 'mnist-bench predict --ckpt_path RUN "
                       "IMAGES...' classifies image files; 'mnist-bench export --ckpt_path RUN --output M.onnx'. "
                       "--allow-imports PKG (or MNIST_BENCH_ALLOW_IMPORTS) lets a config name your own package's "
                       "classes.")
        kwargs.setdefault("parser_kwargs", {**no_exit, "prog": "mnist-bench", "description": description,
                                            **{cmd: dict(no_exit) for cmd in SUBCOMMANDS}})
        kwargs.setdefault("save_config_callback", SaveConfigToRunDir)
        kwargs.setdefault("save_config_kwargs", {"run_dir": self.run_dir})
        kwargs.setdefault("seed_everything_default", DEFAULT_SEED)
        restrict_config_imports(allow_imports)
        super().__init__(MNISTClassifier, MNISTDataModule, *args, subclass_mode_model=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--logger", type=str | None, default=None,
                            help="experiment loggers by short name, comma-separated: tensorboard (the default), csv, "
                                 "mlflow, wandb; each writes into the run's folder. Full classes go under "
                                 "trainer.logger")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # One checkpoint per run, the newest, saved at the end of each training epoch (so it holds the whole epoch,
        # train metrics too), and last.ckpt linked to it. (With a monitor, Lightning 2.6 refreshes last.ckpt only
        # when the monitored metric improves, which would resume a killed run from a stale epoch.)
        parser.set_defaults({"checkpoint.save_top_k": 1, "checkpoint.save_last": "link",
                             "checkpoint.save_on_train_epoch_end": True})

    def _check_config(self, config: Any) -> None:
        """Settings that would make a run unsafe or its result misleading are refused before anything is read or
        built."""
        if "weights_only" in config and config.get("weights_only") is not True:
            raise ConfigError("weights_only cannot be turned off: mnist-bench loads every checkpoint as tensors and "
                              "plain data only (torch.load(weights_only=True)), never as code. Fix: remove "
                              "weights_only from the config and the arguments")
        if config.get("ckpt_path") in UNSUPPORTED_CKPT_PATHS:
            raise ConfigError(f"--ckpt_path {config['ckpt_path']} is not supported: each run keeps its newest "
                              "checkpoint. Fix: --ckpt_path last (the newest checkpoint of this model) or a .ckpt path")
        checkpoint = config.get("checkpoint") or {}
        for key in ("every_n_train_steps", "train_time_interval"):
            if checkpoint.get(key):
                raise ConfigError(f"checkpoint.{key}: mid-epoch checkpoints are not supported (a run's clock, "
                                  "history and resume work per epoch). Fix: leave it out; a checkpoint is written "
                                  "after every epoch")
        trainer = config.get("trainer") or {}
        if self.config.get("subcommand") == "fit" and any(trainer.get(key) in (0, 0.0) for key in NOTHING_TO_TRAIN):
            raise ConfigError("trainer.max_epochs, max_steps or limit_train_batches of 0 trains nothing, and its test "
                              "would score an untrained model. Fix: train at least one batch, or use mnist-bench test "
                              "--ckpt_path")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: args for name, args in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # --ckpt_path files are loaded with torch.load(weights_only=True): tensors and plain data, never code
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            parser.set_defaults({"weights_only": True})
        return parser

    def instantiate_classes(self) -> None:
        """A value that the model, DataModule or Trainer rejects when it is built is a config error (exit 2)."""
        try:
            super().instantiate_classes()
        except (ConfigError, UserFacingError):
            raise
        except (ValueError, TypeError, MisconfigurationException) as err:
            if _user_error_in(err) is not None:
                raise
            raise ConfigError(f"{_one_line(str(err))} (while building the model, data or trainer from the config)") \
                from err

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the --ckpt_path file first (for its hyperparameters): damaged files fail here
        with self._refusing_unsafe_checkpoints(damaged_too=True):
            super()._parse_ckpt_path()

    def _run_subcommand(self, subcommand: str) -> None:
        ckpt_path = self._config().get("ckpt_path")
        if ckpt_path not in (None, "last", "best", "hpc", "registry") and not Path(ckpt_path).is_file():
            raise UserFacingError(f"checkpoint {ckpt_path} not found. Fix: give an existing .ckpt file, or "
                                  "--ckpt_path last to resume the newest run of this model")
        with self._refusing_unsafe_checkpoints():
            super()._run_subcommand(subcommand)
        self._leave_together()

    def _leave_together(self) -> None:
        """Under DDP the ranks finish together: rank 0 may still be drawing figures when the others are done, and a
        process that exits while its process group is alive aborts (torchrun then kills the job)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.trainer.strategy.barrier("mnist_bench_done")
            dist.destroy_process_group()

    @contextmanager
    def _refusing_unsafe_checkpoints(self, damaged_too: bool = False) -> Iterator[None]:
        """A checkpoint that torch.load(weights_only=True) rejects is refused with one line (its payload never
        runs); with ``damaged_too``, so is a truncated or empty one."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None  # `last` resolved at parse
        try:
            yield
        except pickle.UnpicklingError as err:
            raise UserFacingError(load_failure(ckpt_path, err)) from err
        except (RuntimeError, EOFError, OSError) as err:
            if not damaged_too:
                raise
            raise UserFacingError(load_failure(ckpt_path, err)) from err

    # --- trainer with our logger and callbacks -------------------------------------------------------------------
    def _config(self) -> Any:
        return self.config.get(str(self.subcommand), self.config)

    def run_dir(self) -> Path:
        return self._run_dir

    def instantiate_trainer(self, **kwargs: Any):
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        log_root = Path(trainer_config.get("default_root_dir") or os.getcwd()) / "lightning_logs"
        model = self.model.model_name
        version = self._resumed_version
        if version is None:
            version = next_version(log_root / model)
        self._run_dir = log_root / model / f"version_{version}"
        trainer_config["logger"] = self._loggers(trainer_config.get("logger"), log_root, model, version)
        if trainer_config.get("profiler") is None:
            trainer_config["profiler"] = NoProfiler()
        rank_zero_info(f"mnist-bench: run dir {self._run_dir}")  # what the benchmark's runner reads
        self._hardware = detect(trainer_config.get("accelerator") or "auto")
        trainer_config["precision"], reason = resolve(trainer_config.get("precision"), self._hardware,
                                                      self.model.bf16_on_cpu, self.model.mixed_precision)
        rank_zero_info(f"mnist-bench: {reason}")  # beside Lightning's own "GPU available: ..." lines
        callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        for callback in callbacks:  # checkpoints in the run's folder, whatever the loggers
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self._run_dir / "checkpoints")
        callbacks += self._run_callbacks(trainer_config)
        return self._instantiate_trainer(trainer_config, callbacks)

    def _loggers(self, given: Any, log_root: Path, model: str, version: int) -> list[Logger] | bool:
        """``--logger``'s loggers (TensorBoard when neither it nor ``trainer.logger`` is set), then those given in
        full under ``trainer.logger``; ``trainer.logger: false`` turns logging off (the run's folder stays)."""
        shortcut = self._config().get("logger")
        if given is False:
            if shortcut is not None:
                raise ConfigError(f"--logger {shortcut} and trainer.logger false contradict each other. Fix: drop "
                                  "one of them")
            return False
        from_config = [] if given in (None, True) else (list(given) if isinstance(given, list) else [given])
        names = logger_names(shortcut) if shortcut or not from_config else []
        return build_loggers(names, log_root, model, version) + from_config or False

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        self._resumed_version: int | None = None
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._check_config(self.config[subcommand])
        if subcommand and self.config[subcommand].get("ckpt_path") == "last":
            self._resolve_last(subcommand)

    def _resolve_last(self, subcommand: str) -> None:
        """``--ckpt_path last`` is the newest run of this model that has a ``last.ckpt``, for every subcommand
        (plain LightningCLI would look in the new, empty version dir, and test or start over from random weights).
        It is resolved before LightningCLI reads the checkpoint's hyperparameters, so the model is built as it was
        trained. ``fit`` continues in that run's version dir; ``test`` and ``validate`` write a new one."""
        config = self.config[subcommand]
        module, _, name = str(config.model.class_path).rpartition(".")
        model_name = getattr(importlib.import_module(module), name).model_name
        root = Path(config.trainer.get("default_root_dir") or os.getcwd())
        model_logs = root / "lightning_logs" / model_name
        versions = {int(v): p for p in model_logs.glob("version_*/checkpoints/last.ckpt")
                    if (v := p.parent.parent.name.removeprefix("version_")).isdigit()}
        if not versions:
            action = "resume" if subcommand == "fit" else subcommand
            fix = "start a new run without --ckpt_path last" if subcommand == "fit" else \
                "train one first (mnist-bench fit), or give a .ckpt path"
            raise UserFacingError(f"nothing to {action}: no {model_logs}/version_*/checkpoints/last.ckpt for "
                                  f"--ckpt_path last. Fix: {fix}")
        version = max(versions)
        config.ckpt_path = str(versions[version])
        if subcommand == "fit":
            self._resumed_version = version
            print(f"resuming {versions[version]}", file=sys.stderr)
        else:
            print(f"{subcommand} with {versions[version]}", file=sys.stderr)

    def _run_callbacks(self, trainer_config: dict[str, Any]) -> list:
        config = self._config()
        optimizer = config.model.init_args.get("optimizer") if "init_args" in config.model else None
        lr = optimizer.get("init_args", {}).get("lr") if hasattr(optimizer, "get") else None
        info = {
            "seed": config.get("seed_everything"),
            "batch_size": config.data.get("batch_size") if config.get("data") else None,
            "lr": lr,
            "hardware": self._hardware.name,
            "config": self._config_dict(),
        }
        callbacks: list = [TimingCallback(), RunReport(self.run_dir, info)]
        if self.subcommand == "test":  # fit gets it for its closing test pass (after_fit)
            callbacks.append(TestFigures(self.run_dir))
        given = trainer_config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if trainer_config.get("enable_progress_bar") is False:
            callbacks.append(EpochLine())
        elif not any(isinstance(cb, ProgressBar) for cb in given):
            callbacks.append(RichProgressBar())
        return callbacks

    def _config_dict(self) -> dict[str, Any]:
        import yaml

        config = self._config()
        return yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False, skip_link_targets=False))

    # --- fit ends with a test pass --------------------------------------------------------------------------------
    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        # The pictures come from the test pass; attached only now, the callback is not called at every training
        # step (Lightning calls each callback at about six hooks a step, whether it implements them or not).
        self.trainer.callbacks.append(TestFigures(self.run_dir))
        self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        self._print_result()

    def after_test(self) -> None:
        self._print_result()

    def _print_result(self) -> None:
        report = next((cb for cb in self.trainer.callbacks if isinstance(cb, RunReport)), None)
        if report is None or report.metrics is None or not self.trainer.is_global_zero:
            return
        print_rich_table([report.metrics], title=f"mnist-bench: {report.metrics['model']} on {report.metrics['device']}")
        loggers = ", ".join(type(logger).__name__ for logger in self.trainer.loggers) or "no logger"
        print(f"run dir: {report.metrics['run_dir']}  (metrics.json, config.yaml, checkpoints/, figures; {loggers})")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_lightning() -> None:
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(_DropAdverts())


def _one_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(lines)


def _concise(message: str) -> str:
    """jsonargparse's message for a bad value under a model's init_args repeats every member of the Union it tried;
    the part that names the key is kept."""
    refusal = import_refusal(message)
    if refusal is not None:
        return refusal
    outer = re.match(r'Parser key "([^"]+)"', message)
    inner = re.search(r"Problem with given class_path '([^']+)': (.*?)(?: - Expected a <class 'NoneType'>|$)", message)
    if outer and inner:
        return f"{outer.group(1)} ({inner.group(1)}): {inner.group(2).strip()}"
    return message


def main(args: list[str] | None = None) -> None:
    """Entry point of ``mnist-bench`` and ``python -m mnist_bench``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in TOOLS:
        module = importlib.import_module(TOOLS[argv[0]])
        sys.exit(module.main(argv[1:]))
    _quiet_lightning()
    try:
        with warnings.catch_warnings():
            # main() passes the arguments itself; LightningCLI would warn that sys.argv differs from them
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
            argv, packages = allowed_imports(argv)
            MNISTBenchCLI(args=argv, allow_imports=packages)
    except ArgumentError as err:
        _exit(2, f"config error: {_concise(_one_line(err))}", hint=True)
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        _exit(1, f"could not write {err.filename or 'a file'}: {err.strerror}. Free some space (or pick a writable "
                 "--trainer.default_root_dir) and rerun with --ckpt_path last; the last complete checkpoint is kept")
    except Exception as err:
        # our own errors may arrive wrapped (jsonargparse wraps what a class's __init__ raises)
        cause = _user_error_in(err)
        if cause is None:
            raise
        if isinstance(cause, ConfigError):
            _exit(2, f"config error: {_one_line(cause)}")
        _exit(1, _one_line(cause))


def _user_error_in(err: BaseException | None) -> Exception | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ConfigError, UserFacingError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _exit(code: int, message: str, hint: bool = False) -> None:
    print(f"mnist-bench: {message}", file=sys.stderr)
    if hint:
        print("  (run with --help for the accepted options)", file=sys.stderr)
    sys.exit(code)
