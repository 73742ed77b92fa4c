"""The best validated epoch's checkpoint (``--test_weights best``), with its monitor checked at the first
validation (the sanity check's, when there is one) instead of at the end of the first training epoch."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from mnist_bench.errors import ConfigError

LOWER_IS_BETTER = ("loss", "fallback_rate")  # the metrics (after "val/") whose best epoch is the lowest


class BestCheckpoint(ModelCheckpoint):
    def __init__(self, monitor: str, **kwargs: Any) -> None:
        lower = monitor.rsplit("/", 1)[-1] in LOWER_IS_BETTER
        super().__init__(monitor=monitor, mode="min" if lower else "max", **kwargs)

    @property
    def state_key(self) -> str:
        # the key a plain ModelCheckpoint has, so that runs checkpointed by either resume with their best so
        # far
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        logged = sorted(key for key in trainer.callback_metrics if key.startswith("val/"))
        if logged and self.monitor not in logged:
            raise ConfigError(
                f"best_monitor {self.monitor!r} is not a metric this model logs on validation "
                f"({', '.join(logged)}). Fix: --best_monitor {logged[0]} (or another of those)"
            )
        super().on_validation_end(trainer, pl_module)
