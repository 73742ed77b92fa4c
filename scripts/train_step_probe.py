"""Times a model's training step on this CPU under several options (memory format, batch size, precision,
threads, torch.compile), and optionally profiles one option per operator. The model is built from a config, as
`fit` builds it; the batches are random, so only the speed counts.

    python scripts/train_step_probe.py --config configs/vgg16.yaml --batch 64 128 256 --channels_last 0 1 \
        --output results/vgg16_avx2/options.json
    python scripts/train_step_probe.py --config configs/vgg16.yaml --profile \
        --output results/vgg16_avx2/profile.txt

MNIST_BENCH_KEEP_FREED_MEMORY=0 before the command times it with glibc's default allocation
(mnist_bench/cpu_memory.py).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist_bench.cli.app import MNISTBenchCLI
from mnist_bench.cpu_memory import keep_freed_memory
from mnist_bench.precision import cpu_capability
from mnist_bench.provenance import cpu_name, git_sha


def build(config: str, channels_last: bool, extra: list[str]):
    cli = MNISTBenchCLI(
        args=[
            "--config",
            config,
            f"--model.init_args.channels_last={channels_last}",
            "--trainer.logger=false",
            *extra,
        ],
        run=False,
    )
    model = cli.model
    model.setup("fit")
    model.train()
    return model


def step_fn(model, batch: int, precision: str, compile_net: bool):
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, model.num_classes, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile_net else model
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    )

    def step():
        with autocast:
            loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def rate(step, batch: int, warmup: int, steps: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return batch / median, times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[128])
    parser.add_argument("--channels_last", type=int, nargs="+", default=[1])
    parser.add_argument("--precision", nargs="+", default=["32-true"])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--compile", type=int, nargs="+", default=[0])
    parser.add_argument("--mkldnn", type=int, nargs="+", default=[1], help="0: ATen's own convolutions")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--profile", action="store_true", help="profile the first option per operator instead"
    )
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "extra", nargs="*", help="more config arguments, e.g. --model.init_args.image_size=40"
    )
    args = parser.parse_args(argv)
    memory = (
        keep_freed_memory()
    )  # as mnist-bench's entry point does; MNIST_BENCH_KEEP_FREED_MEMORY=0 turns it off
    head = {
        "memory": memory,
        "config": args.config,
        "extra": args.extra,
        "cpu": cpu_name(),
        "cpu_capability": cpu_capability(),
        "torch": torch.__version__,
        "git_sha": git_sha(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.profile:
        torch.set_num_threads(args.threads[0])
        torch.backends.mkldnn.enabled = bool(args.mkldnn[0])
        model = build(args.config, bool(args.channels_last[0]), args.extra)
        step = step_fn(model, args.batch[0], args.precision[0], bool(args.compile[0]))
        rate(step, args.batch[0], args.warmup, 1)
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
        ) as prof:
            for _ in range(args.steps):
                step()
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=40
        )
        out.write_text(
            json.dumps(head) + "\n" + f"batch {args.batch[0]}, channels_last {args.channels_last[0]}, "
            f"{args.precision[0]}, {args.steps} steps\n" + table
        )
        print(table)
        return
    rows = []
    for batch, cl, precision, threads, comp, mkldnn in itertools.product(
        args.batch, args.channels_last, args.precision, args.threads, args.compile, args.mkldnn
    ):
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = bool(mkldnn)
        model = build(args.config, bool(cl), args.extra)
        step = step_fn(model, batch, precision, bool(comp))
        img_s, times = rate(step, batch, args.warmup, args.steps)
        row = {
            "batch": batch,
            "channels_last": bool(cl),
            "precision": precision,
            "threads": threads,
            "compile": bool(comp),
            "mkldnn": bool(mkldnn),
            "train_img_s": round(img_s, 1),
            "step_s": {
                "min": round(times[0], 3),
                "median": round(times[len(times) // 2], 3),
                "max": round(times[-1], 3),
            },
        }
        rows.append(row)
        print(json.dumps({"memory": memory, **row}), flush=True)
    out.write_text(
        json.dumps({**head, "steps": args.steps, "warmup": args.warmup, "rows": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
