"""`make bench-overhead`: the same CNN trained three ways on this machine, side by side.

1. The seed notebook's pipeline: torchvision DataLoader with PIL transforms, batch 64, Adam 1e-3, its CNN
   (conv32-pool-conv64-pool-fc128-dropout-fc10), 5 epochs over the 60k training images, fp32.
2. A plain PyTorch loop with ``configs/cnn.yaml``'s network and settings, on the DataModule's tensors.
3. ``mnist-bench fit --config configs/cnn.yaml`` (Lightning), whose ``time/train_s`` is compared with 2.

Prints the training times and the ratios; writes them to ``results/overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from mnist_bench.benchmark.seed_pipeline import SEED_EPOCHS, sync, time_seed_pipeline
from mnist_bench.data.datamodule import MNISTDataModule, ShuffledBatches, random_affine
from mnist_bench.data.datasets import MNIST as MNIST_SPEC
from mnist_bench.models.base import metric_collection
from mnist_bench.models.components.cnn import SmallCNN
from mnist_bench.provenance import device_description, git_sha, versions
from mnist_bench.utils import write_json_atomic

normalize = MNIST_SPEC.info.normalize


def cnn_precision(config: dict, device: torch.device) -> str:
    """The precision ``mnist-bench fit`` resolves for this config on this device."""
    from mnist_bench.models import CNN
    from mnist_bench.precision import detect, resolve

    hardware = detect("cuda" if device.type == "cuda" else "cpu")
    return resolve(
        config.get("trainer", {}).get("precision"), hardware, CNN.bf16_on_cpu, CNN.mixed_precision
    )[0]


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def time_plain_loop(config: dict, data_dir: str, device: torch.device) -> float:
    """configs/cnn.yaml's network, optimizer, schedule, augmentation and precision in a hand-written loop,
    with the data on the device as the DataModule keeps it."""
    model_args = config["model"]["init_args"]
    data_args = config.get("data", {})
    epochs = config["trainer"]["max_epochs"]
    dtype = autocast_dtype(cnn_precision(config, device))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    torch.manual_seed(config.get("seed_everything", 0))
    dm = MNISTDataModule(data_dir=data_dir, **{k: v for k, v in data_args.items() if k != "data_dir"})
    dm.setup("fit")
    dm.train_set, dm.val_set = dm.train_set.to(device), dm.val_set.to(device)
    net = SmallCNN(1, 28, tuple(model_args["channels"]), model_args["hidden"], model_args["dropout"]).to(
        device
    )
    channels_last = model_args.get("channels_last", False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt_args = model_args["optimizer"]["init_args"]
    opt = torch.optim.AdamW(net.parameters(), **opt_args)
    batches = ShuffledBatches(
        dm.train_set, dm.batch_size
    )  # what the DataModule serves Lightning on one device
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, total_steps=epochs * len(batches), **model_args["scheduler"]["init_args"]
    )
    # the Lightning module updates train accuracy and F1 each step too, and sums the training loss on the
    # device
    metrics = metric_collection(MNIST_SPEC.info.num_classes).to(device)
    smoothing = model_args.get("label_smoothing", 0.0)
    train_s = 0.0
    for epoch in range(epochs):
        net.train()
        sync(device)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for images, y in batches:
            x = images.float() / 255.0
            if dm.augment:
                x = random_affine(x, dm.max_shift_px, dm.max_rotate_deg, dm.max_scale)
            x = normalize(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            metrics.update(logits.argmax(1), y)
            loss_sum += loss.detach() * len(y)
        train_acc = float(metrics.compute()["acc"])
        metrics.reset()
        train_loss = float(loss_sum) / len(dm.train_set)
        sync(device)
        train_s += time.perf_counter() - start
        val_acc = validate(
            net, dm, dtype, channels_last
        )  # as Lightning does between epochs; not timed, as there
        print(
            f"  plain loop: epoch {epoch + 1}/{epochs}  train/loss {train_loss:.4f}  train/acc"
            f" {train_acc:.4f}  val/acc {val_acc:.4f}  ({train_s:.1f} s of training so far)",
            flush=True,
        )
    return train_s


@torch.no_grad()
def validate(net: nn.Module, dm: MNISTDataModule, dtype: torch.dtype | None, channels_last: bool) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(dm.val_set), dm.eval_batch_size):
        x = normalize(dm.val_set.images[i : i + dm.eval_batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            correct += (net(x).argmax(1) == dm.val_set.labels[i : i + dm.eval_batch_size]).sum().item()
    return correct / len(dm.val_set)


def time_lightning(config_path: str, data_dir: str, extra: list[str]) -> dict:
    from mnist_bench.callbacks.report import RunReport
    from mnist_bench.cli import MNISTBenchCLI

    cli = MNISTBenchCLI(args=["fit", "--config", config_path, "--data.data_dir", data_dir, *extra])
    report = next(cb for cb in cli.trainer.callbacks if isinstance(cb, RunReport))
    return report.metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_bench.benchmark.experiments.overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--config", default="configs/cnn.yaml")
    parser.add_argument(
        "--seed_epochs", type=int, default=SEED_EPOCHS, help="epochs of the seed pipeline (the notebook: 5)"
    )
    parser.add_argument("--skip_seed", action="store_true", help="skip the (slow) seed pipeline")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="alternate Lightning and the plain loop this many times (the median ratio counts)",
    )
    parser.add_argument("--output", default="results/overhead.json")
    parser.add_argument(
        "--root",
        help=(
            "the Lightning runs go to <root>/lightning_logs/cnn/ (default: the config's "
            "trainer.default_root_dir, else the current folder)"
        ),
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: the GPU when there is one, as mnist-bench fit does",
    )
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    fit_args = ["--trainer.enable_progress_bar=false", f"--trainer.accelerator={'gpu' if cuda else 'cpu'}"]
    if args.root:
        fit_args.append(f"--trainer.default_root_dir={args.root}")

    # The machine is shared and its speed drifts over minutes: the two run back to back, alternately, and each
    # pair gives a ratio; the median ratio counts. (The fastest of each is reported too, as timeit would.)
    lightning_runs, plain_runs = [], []
    for k in range(args.repeats):
        print(f"[{k + 1}/{args.repeats}] Lightning: mnist-bench fit --config {args.config}", flush=True)
        lightning_runs.append(time_lightning(args.config, args.data_dir, fit_args))
        print(f"[{k + 1}/{args.repeats}] plain PyTorch loop, same network and settings", flush=True)
        plain_runs.append(time_plain_loop(config, args.data_dir, device))
    seed_s = None
    if not args.skip_seed:
        print(f"seed notebook pipeline ({args.seed_epochs} epochs)", flush=True)
        seed_s = time_seed_pipeline(args.data_dir, args.seed_epochs, device)

    lightning = min(lightning_runs, key=lambda m: m["time/train_s"])
    plain_s = min(plain_runs)
    train_s = lightning["time/train_s"]
    pair_ratios = [m["time/train_s"] / p for m, p in zip(lightning_runs, plain_runs, strict=True)]
    overhead = statistics.median(pair_ratios)
    result = {
        "device": device_description(device),
        "precision": lightning["precision"],
        "hardware": lightning.get("hardware"),
        "versions": versions(),
        "git_sha": git_sha(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "lightning/train_s": train_s,
        "lightning/fit_s": lightning["time/fit_s"],
        "lightning/test_acc": lightning["test/acc"],
        "lightning/train_s_all": [m["time/train_s"] for m in lightning_runs],
        "plain_loop/train_s": round(plain_s, 3),
        "plain_loop/train_s_all": [round(t, 3) for t in plain_runs],
        "seed_pipeline/train_s": round(seed_s, 3) if seed_s else None,
        "seed_pipeline/epochs": args.seed_epochs if seed_s else None,
        "ratio/lightning_over_plain": round(overhead, 4),
        "ratio/lightning_over_plain_pairs": [round(r, 4) for r in pair_ratios],
        "ratio/fastest_over_fastest": round(train_s / plain_s, 4),
        "ratio/lightning_over_seed": round(train_s / seed_s, 4) if seed_s else None,
    }
    write_json_atomic(Path(args.output), result)
    print(json.dumps(result, indent=2))
    print(
        f"Lightning overhead over the plain loop: {100 * (overhead - 1):+.1f}% (median of {len(pair_ratios)} "
        f"back-to-back pairs; fastest over fastest: {100 * (train_s / plain_s - 1):+.1f}%)"
    )
    if seed_s:
        print(
            f"time/train_s vs the seed pipeline: {train_s:.1f} s / {seed_s:.1f} s = {train_s / seed_s:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
