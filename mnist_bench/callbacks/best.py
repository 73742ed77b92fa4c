"""The best validated epoch's checkpoint (``--test_weights best``), with its monitor checked at the first validation
(the sanity check's, when there is one) instead of at the end of the first training epoch."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from mnist_bench.errors import ConfigError


class BestCheckpoint(ModelCheckpoint):
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        logged = sorted(key for key in trainer.callback_metrics if key.startswith("val/"))
        if logged and self.monitor not in logged:
            raise ConfigError(f"best_monitor {self.monitor!r} is not a metric this model logs on validation "
                              f"({', '.join(logged)}). Fix: --best_monitor {logged[0]} (or another of those)")
        super().on_validation_end(trainer, pl_module)
