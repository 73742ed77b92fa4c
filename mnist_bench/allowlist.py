"""What a config may import: the project's classes, torch.optim and Lightning, plus the packages a user allows
on the command line or in the environment (never in a config, which is data: instantiating a class runs its
code)."""

from __future__ import annotations

import os
import re
import sys

from jsonargparse import set_parsing_settings

from mnist_bench.errors import ConfigError

# What a config's class_path (or any other import path given as a value) may name. Everything else, os.system
# or a module of the user's, is refused at parse time: a config is data, and instantiating a class runs its
# code. Lightning: only the packages of the classes a Trainer takes (its top-level lightning.__setup__ runs
# code from the current folder when imported).
LIGHTNING = [
    f"lightning.pytorch.{name}"
    for name in ("callbacks", "loggers", "profilers", "strategies", "plugins", "accelerators")
] + ["lightning.fabric.plugins"]
IMPORT_ALLOWLIST = ["mnist_bench", "torch.optim", *LIGHTNING]
# Your own packages join the list from the command line (--allow-imports) or the environment, never from a
# config.
ALLOW_IMPORTS_FLAG = "--allow-imports"
ALLOW_IMPORTS_ENV = "MNIST_BENCH_ALLOW_IMPORTS"


_allowed: set[str] = set()


def restrict_config_imports(extra: list[str] | tuple[str, ...] = ()) -> None:
    """jsonargparse's import-path policy: deny every path, then allow :data:`IMPORT_ALLOWLIST` and ``extra``.
    The policy is process-wide: what an earlier call allowed beyond this call's list is denied again."""
    allow = [*IMPORT_ALLOWLIST, *extra]
    revoke = sorted(_allowed - set(allow))
    set_parsing_settings(import_path_denylist=["*", *revoke], import_path_allowlist=allow)
    _allowed.clear()
    _allowed.update(allow)


def allowed_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """Takes ``--allow-imports PKG[,PKG...]`` (repeatable, or ``--allow-imports=...``) out of ``argv``.
    Returns the remaining arguments and :func:`allowed_packages` of the values."""
    rest: list[str] = []
    given: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == ALLOW_IMPORTS_FLAG:
            value = next(args, None)
            if value is None or value.startswith("-") or not value.strip(" ,"):
                raise ConfigError(
                    f"{ALLOW_IMPORTS_FLAG} needs a package name, e.g. {ALLOW_IMPORTS_FLAG} mymodels"
                )
            given.append(value)
        elif arg.startswith(ALLOW_IMPORTS_FLAG + "="):
            value = arg.split("=", 1)[1]
            if not value.strip(" ,"):
                raise ConfigError(
                    f"{ALLOW_IMPORTS_FLAG} needs a package name, e.g. {ALLOW_IMPORTS_FLAG}=mymodels"
                )
            given.append(value)
        else:
            rest.append(arg)
    return rest, allowed_packages(given)


def allowed_packages(given: list[str] | None) -> list[str]:
    """The packages named in ``given`` (comma-separated values) and in ``$MNIST_BENCH_ALLOW_IMPORTS``: dotted
    names of the user's own code; the standard library and jsonargparse are refused."""
    values = [os.environ.get(ALLOW_IMPORTS_ENV, ""), *(given or [])]
    packages = [name.strip() for value in values for name in value.split(",") if name.strip()]
    for name in packages:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                f"{ALLOW_IMPORTS_FLAG} / ${ALLOW_IMPORTS_ENV}: {name!r} is not a package or module "
                "name. Fix: give dotted names such as mymodels or mylab.callbacks, comma-separated"
            )
        if name.split(".")[0] in sys.stdlib_module_names or name.split(".")[0] == "jsonargparse":
            raise ConfigError(
                f"{ALLOW_IMPORTS_FLAG} / ${ALLOW_IMPORTS_ENV}: {name!r} is not your own code (the "
                "standard library stays out of reach of a config). Fix: name only your own packages"
            )
    return list(dict.fromkeys(packages))


ALLOW_IMPORTS_HELP = (
    "your own package whose model a checkpoint holds (comma-separated, repeatable; also "
    f"${ALLOW_IMPORTS_ENV})"
)


def import_refusal(message: str) -> str | None:
    """jsonargparse's refusal of an import path, said with the way to allow one's own code."""
    found = re.search(r"Importing '([\w.]+)' is not allowed", message)
    if found is None:
        return None
    path = found.group(1)
    package = path.split(".")[0]
    text = (
        f"'{path}' is outside mnist_bench, torch.optim and Lightning's trainer classes, which is all a config"
        " may name"
    )
    if package in sys.stdlib_module_names:
        return f"{text}. Fix: use a class from those packages"
    return (
        f"{text}. Fix: if it is your own code, allow its package on the command line: {ALLOW_IMPORTS_FLAG} "
        f"{package} (or {ALLOW_IMPORTS_ENV}={package})"
    )


def allowed(class_path: str, extra: list[str] | tuple[str, ...]) -> bool:
    """Whether ``class_path`` lies in the project or in one of the ``extra`` packages."""
    return any(within(class_path, package) for package in ["mnist_bench", *extra])


def within(path: str, package: str) -> bool:
    """Whether the dotted ``path`` is ``package`` or inside it (``mnist_bench_ext`` is not inside
    ``mnist_bench``)."""
    return path == package or path.startswith(package + ".")
