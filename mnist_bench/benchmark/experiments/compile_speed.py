"""`make bench-compile`: each model's recipe trained eagerly and under ``torch.compile``, side by side on this
machine.

For every recipe (a model's config, with the dataset's overlays after it), a short real fit (the config's
model, optimizer, precision and batch size, on the DataModule's images) runs twice: as configured, and with
``model.init_args.compile: true``. Each runs two epochs of ``TRAIN_BATCHES`` and a half batches (so the
smaller last batch of an epoch is met, as in a real run) with a short validation after each epoch (eval mode
compiles its own graph). From the batch times:

- steady-state training images/s, eager and compiled (median batch time of the second epoch's full batches);
- compile time: the compiled fit's total time less what its batches would take at the compiled steady rate
  (with an empty inductor cache, as a first run meets it);
- the full recipe's training time predicted both ways (its epochs × batches per epoch at each steady rate,
  plus the compile time), and which one wins within the run's own time.

Writes ``results/compile.json`` and ``results/compile.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from mnist_bench.benchmark.jobs.estimate import planned_config
from mnist_bench.benchmark.jobs.recipes import DEFAULT_DATASET, Recipe, missing_dataset, recipe_for
from mnist_bench.provenance import device_description, git_sha, versions
from mnist_bench.utils import write_json_atomic

TRAIN_BATCHES = 40  # full batches per epoch of the measurement; one half batch follows them
VAL_BATCHES = 2
FULL_TRAIN_IMAGES = 55_000  # the DataModule's training split (60,000 less val_size 5,000)


class BatchClock(Callback):
    """Wall time of every training batch (and of each validation pass), the device synchronized at each
    edge."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, float]] = []  # (epoch, images, seconds)
        self.validation: list[float] = []
        self._start = 0.0

    def _now(self, pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, len(batch[1]), self._now(pl_module) - self._start))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = self._now(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.validation.append(self._now(pl_module) - self._val_start)


def measure(recipe: Recipe, data_dir: str, compile_net: bool, root: Path) -> dict[str, Any]:
    """One short fit of ``recipe``; its batch times and what they imply."""
    from mnist_bench.cli import MNISTBenchCLI

    planned = planned_config(recipe, [])
    batch_size = int((planned.get("data") or {}).get("batch_size", 128))
    clock = BatchClock()
    args = [
        *recipe.config_args(),
        f"--data.data_dir={data_dir}",
        f"--data.train_subset={TRAIN_BATCHES * batch_size + batch_size // 2}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=2",
        "--trainer.logger=false",
        f"--trainer.limit_val_batches={VAL_BATCHES}",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.init_args.compile={str(compile_net).lower()}",
    ]
    cli = MNISTBenchCLI(args=args, run=False)
    cli.trainer.callbacks.append(clock)
    torch._dynamo.reset()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    total = time.perf_counter() - start
    steady = [s for epoch, n, s in clock.batches if epoch == 1 and n == batch_size]
    step = statistics.median(steady)
    epochs = int((planned.get("trainer") or {}).get("max_epochs", 1))
    return {
        "model": cli.model.model_name,
        "precision": str(cli.trainer.precision),
        "batch_size": batch_size,
        "fit_s": total,
        "train_s": sum(s for _, _, s in clock.batches),
        "validation_s": sum(clock.validation),
        "step_s": step,
        "train_img_s": batch_size / step,
        "recipe_steps": epochs * -(-FULL_TRAIN_IMAGES // batch_size),
    }


def compare_compiled(recipe: Recipe, data_dir: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mnist-bench-compile-") as tmp:
        eager = measure(recipe, data_dir, False, Path(tmp) / "eager")
        # a cache of its own: compile time as a first run meets it, not what an earlier run left on disk
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        compiled = measure(recipe, data_dir, True, Path(tmp) / "compiled")
    # what the compiled fit spent beyond its batches at the compiled steady rate (the eager fit's own start-up
    # and validation are taken out as well, so that only compiling is left)
    batches = 2 * (TRAIN_BATCHES + 0.5)  # the half batches counted as half a step
    compile_s = max(
        0.0, (compiled["fit_s"] - batches * compiled["step_s"]) - (eager["fit_s"] - batches * eager["step_s"])
    )
    steps = eager["recipe_steps"]
    eager_recipe = steps * eager["step_s"]
    compiled_recipe = compile_s + steps * compiled["step_s"]
    return {
        "config": recipe.describe(),
        "model": eager["model"],
        "precision": eager["precision"],
        "batch_size": eager["batch_size"],
        "eager_img_s": eager["train_img_s"],
        "compiled_img_s": compiled["train_img_s"],
        "speedup": eager["step_s"] / compiled["step_s"],
        "compile_s": compile_s,
        "recipe_steps": steps,
        "recipe_train_s_eager": eager_recipe,
        "recipe_train_s_compiled": compiled_recipe,
        "compile_wins": compiled_recipe < eager_recipe,
        "eager": eager,
        "compiled": compiled,
    }


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "| model | precision | batch | eager img/s | compiled img/s | speed-up | compile s | recipe steps | "
        "recipe train s eager | recipe train s compiled | compile wins |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | — | — | — | — | — | — | — | — | — | fails: {r['error']} |")
            continue
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['batch_size']} | {r['eager_img_s']:,.0f} | "
            f"{r['compiled_img_s']:,.0f} | {r['speedup']:.2f}× | {r['compile_s']:.1f} | "
            f"{r['recipe_steps']:,} | {r['recipe_train_s_eager']:.0f} | {r['recipe_train_s_compiled']:.0f} | "
            f"{'yes' if r['compile_wins'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_bench.benchmark.experiments.compile_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--configs", nargs="+", default=None, help="model configs (default: configs/*.yaml)")
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help="each config with configs/data/<dataset>.yaml after it (default mnist)",
    )
    parser.add_argument("--data_dir", default="data")
    parser.add_argument(
        "--output",
        default=None,
        help="default: results/compile.json, results/<dataset>/compile.json for another",
    )
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = str(
            Path("results", *([] if args.dataset == DEFAULT_DATASET else [args.dataset]), "compile.json")
        )
    configs = [Path(c) for c in args.configs] if args.configs else sorted(Path("configs").glob("*.yaml"))
    if configs and (missing := missing_dataset(configs[0].parent, args.dataset)) is not None:
        print(f"compile_speed: error: {missing}", file=sys.stderr)
        return 2
    rows = []
    for config in configs:
        recipe = recipe_for(config.stem, config.parent, args.dataset)
        print(f"== {recipe.describe()}", file=sys.stderr, flush=True)
        try:
            rows.append(compare_compiled(recipe, args.data_dir))
        except Exception as err:  # noqa: BLE001 - a model that does not compile is a finding, not a crash
            from mnist_bench.errors import first_line

            rows.append(
                {
                    "config": recipe.describe(),
                    "model": config.stem,
                    "error": first_line(f"{type(err).__name__}: {err}")[:200],
                }
            )
        print(markdown(rows[-1:], ""), file=sys.stderr, flush=True)
    device = device_description(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    header = (
        f"torch.compile against eager on {device}, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"git {git_sha()}; {TRAIN_BATCHES} full batches and a half batch per epoch, 2 epochs, each fit "
        "once eager and once compiled (mode default)."
    )
    out = Path(args.output)
    write_json_atomic(out, {"header": header, "versions": versions(), "rows": rows})
    out.with_suffix(".md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
