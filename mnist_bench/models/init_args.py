"""What a model's config arguments arrive as (jsonargparse's factories and typed values), and the checks on
them that must fail when the model is built, not at the first step."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import Tensor

from mnist_bench.errors import ConfigError


def class_and_kwargs(factory: Any) -> tuple[type | None, dict[str, Any]]:
    """The class that a config's ``class_path`` factory (a ``functools.partial``) builds, and the arguments it
    has."""
    if inspect.isclass(factory):
        return factory, {}
    if isinstance(factory, functools.partial):
        cls = next((a for a in (factory.func, *factory.args) if inspect.isclass(a)), None)
        return cls, dict(factory.keywords)
    return None, {}


def plain_values(value: Any) -> Any:
    """``value`` with subclasses of bool, int, float and str (jsonargparse's typed values) made plain,
    recursively."""
    if isinstance(value, dict):
        return {plain_values(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain_values(v) for v in value]
        return type(value)(items) if type(value) in (list, tuple) else items
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def check_learning_rates(optimizer: Any, scheduler: Any) -> None:
    """A learning rate that is not a positive number fails when the model is built, not at the first step."""
    for where, factory in (("optimizer", optimizer), ("scheduler", scheduler)):
        _, kwargs = class_and_kwargs(factory)
        for key in ("lr", "max_lr", "base_lr", "eta_min"):
            value = kwargs.get(key)
            if value is None or isinstance(value, Tensor):
                continue
            if (
                not isinstance(value, (int, float))
                or value != value
                or value < 0
                or (value == 0 and key != "eta_min")
            ):
                raise ConfigError(f"model.{where}.init_args.{key} must be a positive number, got {value!r}")
