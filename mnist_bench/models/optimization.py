"""The config's optimizer and learning-rate schedule built for a model: fused kernels on CUDA, a step-counting
schedule given the run's total steps, and a resumed run kept on the schedule it started."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from mnist_bench.errors import ConfigError
from mnist_bench.models.init_args import class_and_kwargs


def build_optimizer(factory: Any, params: Any, device: torch.device) -> torch.optim.Optimizer:
    """The config's optimizer over ``params``. On CUDA an optimizer with a fused kernel (Adam, AdamW, SGD,
    ...) uses it unless the config sets ``fused`` or ``foreach``: one kernel launch for all parameters instead
    of several per tensor, which the small models' short GPU steps notice."""
    cls, given = class_and_kwargs(factory)
    extra = {}
    if (
        device.type == "cuda"
        and cls is not None
        and "fused" in inspect.signature(cls).parameters
        and all(given.get(key) is None for key in ("fused", "foreach"))
        and not given.get("differentiable")
    ):
        extra["fused"] = True
    return factory(params, **extra)


def build_schedule(
    factory: Any,
    optimizer: torch.optim.Optimizer,
    stepping_batches: Callable[[], int | float],
    resumed_total_steps: int | None,
) -> tuple[dict[str, Any], int | None]:
    """Lightning's scheduler entry, stepped every optimizer step, and the total steps a step-counting schedule
    (a class taking ``total_steps``: ``OneCycleLR``, ``WarmupCosineLR``) was built for. Given none, it gets
    ``stepping_batches()`` (the trainer's estimate, asked only then); a resumed run whose schedule planned
    another total is refused."""
    scheduler_cls, given = class_and_kwargs(factory)
    kwargs: dict[str, Any] = {}
    total_steps = None
    if scheduler_cls is not None and "total_steps" in inspect.signature(scheduler_cls).parameters:
        if given.get("total_steps") is None:
            kwargs["total_steps"] = int(stepping_batches())
        total_steps = given.get("total_steps") or kwargs["total_steps"]
        if resumed_total_steps is not None and resumed_total_steps != total_steps:
            raise ConfigError(
                f"model.scheduler: the run being resumed planned its {scheduler_cls.__name__} over"
                f" {resumed_total_steps} optimizer steps, and these settings give {total_steps}"
                " (trainer.max_epochs, data.batch_size or accumulate_grad_batches changed): the schedule"
                " cannot stretch. Fix: resume with the run's own settings, or start a new run"
            )
    try:
        scheduler = factory(optimizer, **kwargs)
    except (
        ZeroDivisionError,
        ValueError,
    ) as err:  # e.g. OneCycleLR when pct_start × total_steps is exactly 1
        name = scheduler_cls.__name__ if scheduler_cls is not None else "the scheduler"
        steps = f" over {kwargs['total_steps']} training steps" if "total_steps" in kwargs else ""
        raise ConfigError(
            f"model.scheduler: {name} cannot schedule this run{steps} ({err or type(err).__name__}). "
            "Fix: train for more steps or change the scheduler's init_args"
        ) from err
    return {"scheduler": scheduler, "interval": "step"}, total_steps
