"""``mnist-bench``'s entry point: the tools of our own (data, predict, export), the LR finder, else
LightningCLI; every error that is the user's to fix becomes one line and an exit code (2: config, 1: input or
environment)."""

from __future__ import annotations

import errno
import importlib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path

from jsonargparse import ArgumentError

from mnist_bench.allowlist import allowed_imports, import_refusal
from mnist_bench.cli.app import MNISTBenchCLI
from mnist_bench.cpu_memory import keep_freed_memory
from mnist_bench.errors import ConfigError, one_line, user_error_in
from mnist_bench.sweep.protocol import die_with_worker
from mnist_bench.utils import pin_to_given_cpus

# subcommands of our own, outside LightningCLI (its `predict` on the test set gives way to ours on image
# files)
TOOLS = {
    "data": "mnist_bench.data.fetch",
    "predict": "mnist_bench.inference.predict",
    "export": "mnist_bench.inference.export",
    "sweep": "mnist_bench.sweep.main",
}
# disk full, file too large, read-only file system, permission denied, quota exceeded
WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def main(args: list[str] | None = None) -> None:
    """Entry point of ``mnist-bench`` and ``python -m mnist_bench``."""
    argv = list(sys.argv[1:] if args is None else args)
    pin_to_given_cpus()
    keep_freed_memory()  # before the first large tensor: a step's big blocks stay mapped for the next step
    die_with_worker()  # a sweep's trial ends with its worker
    if argv and argv[0] in TOOLS:
        module = importlib.import_module(TOOLS[argv[0]])
        sys.exit(module.main(argv[1:]))
    _quiet_lightning()
    try:
        with warnings.catch_warnings():
            # main() passes the arguments itself; LightningCLI would warn that sys.argv differs from them
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
            argv, packages = allowed_imports(argv)
            if argv and argv[0] == "lr-find":
                from mnist_bench.cli.lr_find import run as lr_find

                lr_find(argv[1:], packages)
            else:
                MNISTBenchCLI(args=argv, allow_imports=packages)
    except KeyboardInterrupt as err:
        _exit(130, f"interrupted (Ctrl-C){'; ' + str(err) if str(err) else ''}")
    except ArgumentError as err:
        given = any(arg == "--config" or arg.startswith("--config=") for arg in argv)
        _exit(2, f"config error: {concise(one_line(err), given)}", hint=True)
    except UnicodeDecodeError as err:
        _exit(
            2,
            f"config error: {_not_utf8(argv) or 'a config file'} is not UTF-8 text (byte {err.start}). "
            "Fix: save it as UTF-8",
        )
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        folder = Path(err.filename) if err.filename else None  # a checkpoint's folder (CompleteCheckpointIO)
        if folder is not None and folder.name == "checkpoints" and not (folder / "last.ckpt").exists():
            rerun = "rerun without --ckpt_path (no epoch was checkpointed yet, so there is nothing to resume)"
        else:
            rerun = "rerun with --ckpt_path last; the last complete checkpoint is kept"
        _exit(
            1,
            f"could not write {err.filename or 'a file'}: {err.strerror}. Free some space (or pick a writable"
            f" --trainer.default_root_dir) and {rerun}",
        )
    except Exception as err:
        cause = user_error_in(err)
        if cause is None and "more than one stateful callback" in str(err):
            kind = re.search(r"of type `?(\w+)", str(err))
            _exit(
                2,
                f"config error: trainer.callbacks: a second {kind.group(1) if kind else 'callback'} of a kind"
                " that keeps state (mnist-bench adds a ModelCheckpoint of its own). Fix: set it in the"
                " config's checkpoint: section instead, or drop it",
            )
        if cause is None:
            raise
        if isinstance(cause, ConfigError):
            _exit(2, f"config error: {one_line(cause)}")
        _exit(getattr(cause, "exit_code", 1), one_line(cause))


def _not_utf8(argv: list[str]) -> str | None:
    """The first ``--config`` file (or ``--<section>=file``) on the command line that is not UTF-8 text."""
    for i, arg in enumerate(argv):
        value = (
            arg.split("=", 1)[1]
            if arg.startswith("--") and "=" in arg
            else (argv[i + 1] if arg.startswith("--") and i + 1 < len(argv) else None)
        )
        if value is None or not Path(value).is_file():
            continue
        try:
            Path(value).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            return value
        except OSError:
            continue
    return None


def concise(message: str, configs_given: bool = True) -> str:
    """jsonargparse's message for a bad value under a model's init_args repeats every member of the Union it
    tried; the part that names the key is kept."""
    alone = overlay_alone(message, configs_given)
    if alone is not None:
        return alone
    refusal = import_refusal(message)
    if refusal is not None:
        return refusal
    unknown = unknown_argument(message)
    if unknown is not None:
        return unknown
    outer = re.match(r'Parser key "([^"]+)"', message)
    inner = re.search(
        r"Problem with given class_path '([^']+)': (.*?)(?: - Expected a <class 'NoneType'>|$)", message
    )
    if outer and inner:
        return f"{outer.group(1)} ({inner.group(1)}): {inner.group(2).strip()}"
    return message


OVERLAY_FIX = (
    "give the model's config first and the overlays after it, e.g. --config configs/cnn.yaml --config "
    "configs/data/fashion_mnist.yaml --config configs/fashion_mnist/cnn.yaml"
)


def overlay_alone(message: str, configs_given: bool = True) -> str | None:
    """A config that names no model (a data overlay given alone, or no config at all), or a class's init_args
    with no class_path (a model overlay such as configs/fashion_mnist/cnn.yaml given alone, which jsonargparse
    reports as an import of typing.Union): the key, and how to give the recipe it changes."""
    if re.search(r"arguments are required: (\w+\.)?model\b", message):
        if not configs_given:
            return "no model given. Fix: --config configs/<model>.yaml, e.g. --config configs/cnn.yaml"
        return f"no model: the configs given name none (a data overlay does not). Fix: {OVERLAY_FIX}"
    at = message.find("'typing.Union'")
    if at >= 0:
        key = ".init_args.".join(re.findall(r'Parser key "([^"]+)"', message[:at])) or "a class"
        return (
            f"{key}: init_args without a class_path. Fix: add its class_path, or, for an overlay,"
            f" {OVERLAY_FIX}"
        )
    return None


def unknown_argument(message: str) -> str | None:
    """An init_args key that the named class (a scheduler, an optimizer) does not take: the full key, the
    class and the arguments it takes, in one line instead of jsonargparse's tour of the Union it tried."""
    found = re.search(
        r"Option '([^']+)' is not accepted\. Got value: " r"Namespace\(class_path='([^']+)'",
        message,
    )
    if found is None:
        return None
    option, class_path = found.groups()
    key = ".init_args.".join([*re.findall(r'Parser key "([^"]+)"', message[: found.start()]), option])
    module, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)  # imported by jsonargparse already; nothing new is
    try:
        params = [
            p
            for p in inspect.signature(cls).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return f"{key}: {name or class_path} has no argument {option}"
    if "expects a function or a callable class" in message:
        params = params[1:]  # the callable's own argument (the optimizer, the parameters), given by the model
    return (
        f"{key}: {name} has no argument {option}; its arguments: {', '.join(p.name for p in params)}. "
        "Fix: one of those, or another class_path"
    )


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_lightning() -> None:
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(_DropAdverts())


def _exit(code: int, message: str, hint: bool = False) -> None:
    print(f"mnist-bench: {message}", file=sys.stderr)
    if hint:
        print("  (run with --help for the accepted options)", file=sys.stderr)
    sys.exit(code)
