"""``mnist-bench lr-find --config configs/<model>.yaml``: Lightning's learning-rate range test on a recipe.

The config's model, optimizer, data and precision are built as ``fit`` builds them; ``Tuner.lr_find`` then
trains ``--num_training`` steps from the same initial weights while raising every parameter group's learning
rate from ``--min_lr`` to ``--max_lr`` (the config's scheduler is set aside for the test). It prints the
suggestion (the steepest fall of the smoothed loss per decade of rate) and writes ``lr_find.png`` and
``lr_find.json`` in a run folder of their own, ``lightning_logs/<model>/version_<n>/``. Nothing is trained for
good and no checkpoint is kept.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from mnist_bench.errors import ConfigError
from mnist_bench.provenance import git_sha
from mnist_bench.utils import write_json_atomic

USAGE = (
    "mnist-bench lr-find --config CONFIG [--min_lr 1e-6] [--max_lr 1] [--num_training 100] "
    "[--mode exponential|linear] [any fit option, e.g. --data.batch_size 256]"
)


def finder_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The finder's own options; the rest goes to the config parser, as for ``fit``."""
    parser = argparse.ArgumentParser(prog="mnist-bench lr-find", usage=USAGE, add_help=False)
    parser.add_argument("--min_lr", type=float, default=1e-6)
    parser.add_argument("--max_lr", type=float, default=1.0)
    parser.add_argument("--num_training", type=int, default=100)
    parser.add_argument("--mode", choices=("exponential", "linear"), default="exponential")
    options, rest = parser.parse_known_args(argv)
    if not 0 < options.min_lr < options.max_lr or not math.isfinite(options.max_lr):
        raise ConfigError(
            f"lr-find: --min_lr {options.min_lr} and --max_lr {options.max_lr} must be positive, "
            "finite and in that order. Fix: e.g. --min_lr 1e-6 --max_lr 1"
        )
    if options.num_training < 10:
        raise ConfigError(
            f"lr-find: --num_training {options.num_training} is too few steps to read a curve from. "
            "Fix: at least 10 (100 by default)"
        )
    return options, rest


def lr_hint(config: Any, suggestion: float) -> str:
    """How to use the suggestion with this config's optimizer and scheduler."""
    hint = f"--model.init_args.optimizer.init_args.lr={suggestion:.3g}"
    scheduler = config.model.init_args.get("scheduler") if "init_args" in config.model else None
    if hasattr(scheduler, "get") and "max_lr" in (scheduler.get("init_args") or {}):
        hint += f" --model.init_args.scheduler.init_args.max_lr={suggestion:.3g}"
    return hint


def unbias_smoothing(finder: Any) -> bool:
    """Lightning 2.6's range test divides its running loss by ``1 - beta ** (global_step + 1)`` with the
    global step already counted up, one step too many: the first losses read about half their size (2.3 reads
    1.2), the curve seems to rise at the smallest rates, and the suggestion lands just after that false peak.
    Corrected here, only where Lightning's code is the one with the off-by-one (``_LRCallback`` in
    lightning/pytorch/tuner/lr_finder.py, unchanged from 2.6.5 to master; no upstream issue yet, the nearest
    is Lightning-AI/pytorch-lightning#14167), so it retires itself once fixed; returns whether it was
    corrected."""
    import inspect

    from lightning.pytorch.tuner.lr_finder import _LRCallback

    source = inspect.getsource(_LRCallback.on_train_batch_end)
    if "current_step = trainer.global_step" not in source or "self.beta ** (current_step + 1)" not in source:
        return False
    beta = 0.98  # _LRCallback's default, which lr_find uses
    losses = finder.results["loss"]
    finder.results["loss"] = [
        loss * (1 - beta ** (i + 2)) / (1 - beta ** (i + 1)) if math.isfinite(loss) else loss
        for i, loss in enumerate(losses)
    ]
    return True


def steepest_per_decade(
    lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The rate where the smoothed loss falls fastest per decade of rate (the slope against log10 of the rate,
    as the range test's rates are spaced). Lightning's ``suggestion()`` takes the slope against the rate
    itself, which the tiny spacing of the smallest rates turns into noise: on the CNN it picks 4.6e-06, on a
    flat stretch."""
    import numpy as np

    x = np.log10(np.asarray(lrs[skip_begin : len(lrs) - skip_end], dtype=float))
    y = np.asarray(losses[skip_begin : len(losses) - skip_end], dtype=float)
    keep = np.isfinite(y)
    if keep.sum() < 3:
        return None
    x, y = x[keep], y[keep]
    return float(10 ** x[int(np.argmin(np.gradient(y, x)))])


def scaled_groups(model: Any) -> list[str]:
    """The parameter groups that training runs at another rate than the optimizer's (e.g. a pretrained
    backbone at ``backbone_lr_scale``): the range test runs them all at one rate."""
    from mnist_bench.models.init_args import class_and_kwargs

    base = class_and_kwargs(model.optimizer)[1].get("lr")
    groups = model.parameter_groups()
    if not isinstance(groups, list):
        return []
    return [
        str(g.get("name", i))
        for i, g in enumerate(groups)
        if isinstance(g, dict) and g.get("lr") not in (None, base)
    ]


def run(argv: list[str], allow_imports: list[str]) -> None:
    """Builds the recipe as ``fit`` would, runs the range test, writes its plot and numbers."""
    from lightning.pytorch.tuner import Tuner

    from mnist_bench.cli.app import MNISTBenchCLI
    from mnist_bench.plots import plt

    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {USAGE}\n\n{__doc__}")
        return
    options, rest = finder_options(argv)
    cli = MNISTBenchCLI(args=rest, allow_imports=allow_imports, run=False)
    model, trainer = cli.model, cli.trainer
    model.stop_on_divergence = False  # the test raises the rate until the loss diverges
    finder = Tuner(trainer).lr_find(
        model,
        datamodule=cli.datamodule,
        min_lr=options.min_lr,
        max_lr=options.max_lr,
        num_training=options.num_training,
        mode=options.mode,
        update_attr=False,
    )
    if finder is None or not trainer.is_global_zero:
        return
    corrected = unbias_smoothing(finder)
    lightning_suggestion = finder.suggestion()
    suggestion = steepest_per_decade(finder.results["lr"], finder.results["loss"])
    run_dir = cli.run.path
    run_dir.mkdir(parents=True, exist_ok=True)
    figure, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(finder.results["lr"], finder.results["loss"])
    if suggestion is not None:
        at = min(range(len(finder.results["lr"])), key=lambda i: abs(finder.results["lr"][i] - suggestion))
        ax.plot(
            [suggestion],
            [finder.results["loss"][at]],
            "o",
            color="red",
            markersize=9,
            label=f"steepest fall per decade: {suggestion:.3g}",
        )
        ax.legend()
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="training loss (smoothed)",
        title=(
            f"{model.model_name} on {model.dataset.name}: learning-rate range test "
            f"({len(finder.results['lr'])} steps)"
        ),
    )
    figure.savefig(run_dir / "lr_find.png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    groups = scaled_groups(model)
    write_json_atomic(
        run_dir / "lr_find.json",
        {
            "model": model.model_name,
            "dataset": model.dataset.name,
            "suggestion": suggestion,
            "lightning_suggestion": lightning_suggestion,
            "min_lr": options.min_lr,
            "max_lr": options.max_lr,
            "num_training": options.num_training,
            "mode": options.mode,
            "steps_run": len(finder.results["lr"]),
            "groups_scaled_in_training": groups,
            "lr": [float(v) for v in finder.results["lr"]],
            "loss": [float(v) if math.isfinite(v) else None for v in finder.results["loss"]],
            "precision": str(trainer.precision),
            "git_sha": git_sha(),
            "smoothing_unbiased": corrected,
        },
    )
    if suggestion is None:
        print(
            f"lr-find: no suggestion (the loss never fell steadily over {len(finder.results['lr'])} steps); "
            f"see {run_dir / 'lr_find.png'}"
        )
        return
    print(
        f"lr-find: suggested learning rate {suggestion:.3g} (the steepest fall of the smoothed loss per"
        " decade of rate; read the curve in the plot too)"
    )
    if groups:
        print(
            f"  the test ran every parameter group at one rate; in training {', '.join(groups)} run at their"
            " own fraction of the optimizer's lr"
        )
    print(f"  use it: mnist-bench fit {' '.join(rest)} {lr_hint(cli.config, suggestion)}")
    print(f"  plot and numbers: {run_dir / 'lr_find.png'}, {run_dir / 'lr_find.json'}")
