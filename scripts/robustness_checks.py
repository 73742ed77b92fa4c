"""Checks behind the robustness report's explanations, on the runs it evaluated (their run dirs as arguments):
brightness and fog with the offset taken back off, normalization layers per model, and whether VGG16's
accuracy under PGD is masked gradients (more steps, transfer from other models). Writes
results/robustness/checks.md.

    python scripts/robustness_checks.py RUNS_ROOT   # e.g. /tmp/b31/lightning_logs (alexnet/version_0, ...)
"""

import sys
from pathlib import Path

import numpy as np
import torch

from mnist_bench.evaluate.attacks import AttackSettings, adversarial_images, predict_pixels
from mnist_bench.evaluate.run import Settings, TestImages
from mnist_bench.inference.checkpoints import load_trained

MODELS = ("alexnet", "cnn", "faster_rcnn", "vgg16", "vit")


def main(root: Path, out: Path) -> None:
    test = TestImages("data", "mnist", Settings())
    y = test.labels[test.index]
    bright, fog = test.corrupted("brightness"), test.corrupted("fog")
    low, high = fog.min(axis=(1, 2, 3), keepdims=True), fog.max(axis=(1, 2, 3), keepdims=True)
    lines = [
        "# Checks behind the robustness report",
        "",
        f"Runs: {root}/<model>/version_0; the report's 2,000-image subset.",
        "",
        "| model | batch norm layers | layer norm layers | brightness | brightness - 0.5 | fog | "
        "fog stretched to [0, 1] per image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    models = {m: load_trained(root / m / "version_0").eval() for m in MODELS}
    for name, model in models.items():

        def acc(x, model=model):
            return (predict_pixels(model, x.astype(np.float32)) == y).mean()

        bn = sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in model.modules())
        ln = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
        lines.append(
            f"| {name} | {bn} | {ln} | {acc(bright):.1%} | {acc(np.clip(bright - 0.5, 0, 1)):.1%} | "
            f"{acc(fog):.1%} | {acc((fog - low) / (high - low + 1e-6)):.1%} |"
        )
    x, t = test.pixels[test.attack_index][:200], test.labels[test.attack_index][:200]
    vgg = models["vgg16"]
    lines += [
        "",
        "VGG16 under PGD at ε 0.1 on the first 200 attacked images, and PGD examples made on other models:",
        "",
    ]
    for steps in (10, 40):
        adv = adversarial_images(vgg, x, t, "pgd", 0.1, AttackSettings(pgd_steps=steps))
        lines.append(
            f"- PGD-{steps} on vgg16 itself: vgg16 reads {(predict_pixels(vgg, adv) == t).mean():.1%}"
        )
    for source in ("cnn", "alexnet"):
        for eps in (0.1, 0.2):
            adv = adversarial_images(models[source], x, t, "pgd", eps, AttackSettings())
            lines.append(
                f"- PGD-10 at ε {eps} made on {source}: {source} reads "
                f"{(predict_pixels(models[source], adv) == t).mean():.1%}, vgg16 "
                f"{(predict_pixels(vgg, adv) == t).mean():.1%}"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path("results/robustness/checks.md"))
