"""The evaluations of several runs side by side: tables with Wilson intervals, McNemar's paired tests per
condition (Holm-corrected over the pairs of models, as the accuracy table is), calibration and cost, as
``robustness.md`` and ``robustness.json``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnist_bench.benchmark.report.stats import LEVEL, holm, mcnemar_exact, wilson_interval
from mnist_bench.evaluate.calibration import BOOTSTRAP, ece_bootstrap
from mnist_bench.evaluate.corruptions import CORRUPTIONS, SEVERITY


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def interval(correct: int, n: int) -> str:
    low, high = wilson_interval(correct, n)
    return f"{100 * low:.1f}–{100 * high:.1f}"


def paired(
    records: Sequence[dict[str, Any]], correct: Sequence[dict[str, np.ndarray]], condition: str
) -> list[dict[str, Any]]:
    """McNemar's exact test for every pair of models on one condition (the same images), Holm-corrected over
    the pairs."""
    tests = []
    for (i, a), (j, b) in itertools.combinations(enumerate(records), 2):
        ra, rb = correct[i].get(condition), correct[j].get(condition)
        if ra is None or rb is None or len(ra) != len(rb):
            continue
        only_a, only_b, p = mcnemar_exact(ra, rb)
        tests.append(
            {
                "a": a["model"],
                "b": b["model"],
                "n": len(ra),
                "acc_a": float(ra.mean()),
                "acc_b": float(rb.mean()),
                "only_a": only_a,
                "only_b": only_b,
                "p": p,
            }
        )
    for test, adjusted in zip(tests, holm([t["p"] for t in tests]), strict=True):
        test["p_holm"] = adjusted
        test["significant"] = adjusted < 1 - LEVEL
    return tests


def in_words(tests: Sequence[dict[str, Any]]) -> str:
    """The significant differences of one condition, largest first, or that none is."""
    real = sorted((t for t in tests if t["significant"]), key=lambda t: -abs(t["acc_a"] - t["acc_b"]))
    if not real:
        return "no difference between two models is significant"
    parts = []
    for t in real:
        (hi, lo), diff = (
            ((t["a"], t["b"]) if t["acc_a"] > t["acc_b"] else (t["b"], t["a"])),
            abs(t["acc_a"] - t["acc_b"]),
        )
        parts.append(f"{hi} > {lo} by {100 * diff:.1f} pts")
    return "; ".join(parts)


def calibration_tests(
    records: Sequence[dict[str, Any]], arrays: Sequence[dict[str, np.ndarray]]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, tuple[float, float]]]]:
    """Each model's ECE interval and the paired bootstrap test of every pair's ECE difference, before and
    after temperature scaling (models whose test sets differ in size are not paired)."""
    tests: dict[str, list[dict[str, Any]]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {r["model"]: {} for r in records}
    for when in ("before", "after"):
        models = [
            (
                c[f"calibration/confidence_{when}"].astype(np.float64),
                c["calibration/right"].astype(np.float64),
            )
            for c in arrays
        ]
        sizes = {len(m[0]) for m in models}
        boot = ece_bootstrap(*models[0], others=models[1:]) if len(sizes) == 1 else None
        for k, r in enumerate(records):
            column = boot[:, k] if boot is not None else ece_bootstrap(*models[k])[:, 0]
            intervals[r["model"]][when] = (
                float(np.percentile(column, 2.5)),
                float(np.percentile(column, 97.5)),
            )
        pairs = []
        for (i, a), (j, b) in itertools.combinations(enumerate(records), 2):
            if boot is None:
                continue
            diff = boot[:, i] - boot[:, j]
            p = min(1.0, 2 * min(float((diff <= 0).mean()), float((diff >= 0).mean())))
            pairs.append(
                {
                    "a": a["model"],
                    "b": b["model"],
                    "ece_a": a["calibration"][when]["ece"],
                    "ece_b": b["calibration"][when]["ece"],
                    "p": max(p, 1 / BOOTSTRAP),
                }
            )
        for test, adjusted in zip(pairs, holm([t["p"] for t in pairs]), strict=True):
            test["p_holm"] = adjusted
            test["significant"] = adjusted < 1 - LEVEL
        tests[when] = pairs
    return tests, intervals


def ece_words(tests: Sequence[dict[str, Any]]) -> str:
    real = [t for t in tests if t["significant"]]
    if not real:
        return "no pair's ECE differs significantly"
    parts = []
    for t in sorted(real, key=lambda t: -abs(t["ece_a"] - t["ece_b"])):
        lo, hi = (t["a"], t["b"]) if t["ece_a"] < t["ece_b"] else (t["b"], t["a"])
        parts.append(
            f"{lo} better calibrated than {hi} ({100 * abs(t['ece_a'] - t['ece_b']):.2f} pts of ECE)"
        )
    return "; ".join(parts)


def pooled(correct: dict[str, np.ndarray], prefix: str, names: Sequence[str]) -> np.ndarray | None:
    parts = [correct.get(f"{prefix}{name}") for name in names]
    return None if any(p is None for p in parts) else np.concatenate(parts)


def build(
    records: Sequence[dict[str, Any]], correct: Sequence[dict[str, np.ndarray]], header: str
) -> tuple[str, dict[str, Any]]:
    """``robustness.md`` and ``robustness.json`` for the evaluated runs (one per model)."""
    models = [r["model"] for r in records]
    for c in correct:
        c["corruption/mean"] = pooled(c, "corruption/", CORRUPTIONS)
    epsilons = records[0]["settings"]["attacks"]["epsilons"]
    attack_names = ["clean"] + [f"{m}@{e:g}" for e in epsilons for m in ("fgsm", "pgd")]
    tests = {name: paired(records, correct, f"corruption/{name}") for name in (*CORRUPTIONS, "mean")}
    tests.update({f"attack/{name}": paired(records, correct, f"attack/{name}") for name in attack_names})
    s = records[0]["settings"]
    n_c, n_a = records[0]["n_corruption"], records[0]["n_attack"]
    lines = [
        header,
        "",
        (
            f"Every model sees the same {n_c:,} test images (a seeded draw, seed {s['seed']}) under each"
            f" corruption, and the same first {n_a:,} of them under attack. Intervals: Wilson's 95% interval"
            " from the number of images. Paired tests: McNemar's exact test on the same images,"
            f" Holm-corrected over the {len(models) * (len(models) - 1) // 2} pairs of models in each"
            f" condition; significant = adjusted p < {1 - LEVEL:.2f}."
        ),
        "",
    ]

    lines += [
        "## Corruptions (MNIST-C style)",
        "",
        (
            "Accuracy per corruption (% right, 95% interval below each). The corruptions are regenerated from"
            " MNIST-C's published definitions and severities (`mnist_bench/evaluate/corruptions.py`); 'mean'"
            " pools the 15."
        ),
        "",
    ]
    lines.append("| corruption | " + " | ".join(models) + " | significant differences |")
    lines.append("|---|" + "---:|" * len(models) + "---|")
    for name in ("clean", *CORRUPTIONS, "mean"):
        key = "clean" if name == "clean" else f"corruption/{name}"
        cells = []
        for c in correct:
            right = c[key]
            cells.append(f"{pct(right.mean())} ({interval(int(right.sum()), len(right))})")
        words = "—" if name == "clean" else in_words(tests[name])
        label = f"**{name}**" if name == "mean" else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {words} |")
    lines += ["", "Severities: " + "; ".join(f"{k}: {v}" for k, v in SEVERITY.items()) + ".", ""]

    lines += [
        "## Adversarial attacks (L-infinity, pixels in [0, 1])",
        "",
        (
            f"FGSM and PGD ({s['attacks']['pgd_steps']} steps of 2.5·ε/{s['attacks']['pgd_steps']},"
            f" {'one random start' if s['attacks']['random_start'] else 'no random start'}) from the"
            " Adversarial Robustness Toolbox, on the normalisation and input adapter of each model, so ε is"
            " in pixels for all. faster_rcnn is attacked through its box classifier on the RPN's top"
            " proposal (its detections have no gradient) and scored whole: its row is a weaker attack, an"
            " upper bound on its robustness."
        ),
        "",
    ]
    lines.append("| attack | " + " | ".join(models) + " | significant differences |")
    lines.append("|---|" + "---:|" * len(models) + "---|")
    for name in attack_names:
        cells = []
        for c in correct:
            right = c[f"attack/{name}"]
            cells.append(f"{pct(right.mean())} ({interval(int(right.sum()), len(right))})")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {in_words(tests[f'attack/{name}'])} |")
    lines.append("")

    ece_tests, ece_intervals = calibration_tests(records, correct)
    lines += [
        "## Calibration",
        "",
        (
            "On the full test set, from each run's `test_predictions.npz`; temperature T fitted on the run's"
            " own validation split (NLL). ECE: torchmetrics, 15 equal bins, top label, with a 95% bootstrap"
            f" interval ({BOOTSTRAP} resamples of the test images). Brier: multi-class (0 to 2). The"
            " detector's scores (each class's best detection score) are divided by their sum."
        ),
        "",
        "| model | T | ECE before | ECE after | NLL before | NLL after | Brier before | Brier after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        cal = r["calibration"]
        b, a = cal["before"], cal["after"]
        (lb, hb), (la, ha) = ece_intervals[r["model"]]["before"], ece_intervals[r["model"]]["after"]
        lines.append(
            f"| {r['model']} | {cal['temperature']:.2f} | {100 * b['ece']:.2f}% ({100 * lb:.2f}–"
            f"{100 * hb:.2f}) | {100 * a['ece']:.2f}% ({100 * la:.2f}–{100 * ha:.2f}) | {b['nll']:.4f} | "
            f"{a['nll']:.4f} | {b['brier']:.4f} | {a['brier']:.4f} |"
        )
    lines += [
        "",
        "Paired bootstrap of the ECE differences (the same resamples for every model; two-sided p, "
        "Holm-corrected over the pairs): as trained, "
        + ece_words(ece_tests["before"])
        + "; after temperature scaling, "
        + ece_words(ece_tests["after"])
        + ".",
        "",
    ]
    tests["calibration"] = ece_tests

    lines += [
        "## Cost",
        "",
        (
            f"CPU, float32, {records[0]['cost']['threads']} threads in PyTorch and ONNX Runtime; latency:"
            f" batch 1, median and 95th percentile of {s['cost']['latency_calls']} calls after"
            f" {s['cost']['warmup_calls']} warm-up calls; throughput: batches of {s['cost']['batch_size']}."
            " FLOPs: `torch.utils.flop_counter` (2 per multiply-add), one image."
        ),
        "",
        (
            "| model | params | MFLOPs / image | latency ms (p95) | ONNX RT ms (p95) | throughput img/s | "
            "checkpoint MB | ONNX MB |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        c = r["cost"]
        onnx = c.get("onnx_latency")
        onnx_text = f"{onnx['median_ms']:.2f} ({onnx['p95_ms']:.2f})" if onnx else "—"
        onnx_mb = f"{c['onnx_bytes'] / 1e6:.1f}" if c.get("onnx_bytes") else "—"
        lines.append(
            f"| {r['model']} | {c['params']:,} | {c['flops'] / 1e6:.1f} | {c['latency']['median_ms']:.2f} "
            f"({c['latency']['p95_ms']:.2f}) | {onnx_text} | {c['throughput_img_s']:,.0f} | "
            f"{c['checkpoint_bytes'] / 1e6:.1f} | {onnx_mb} |"
        )
    lines.append("")
    total = sum(r["timing"]["total_s"] for r in records)
    lines += [
        f"Evaluation time of these runs: {total:.0f} s in all ("
        + ", ".join(f"{r['model']} {r['timing']['total_s']:.0f} s" for r in records)
        + ").",
        "",
    ]
    data = {"records": [{k: v for k, v in r.items()} for r in records], "paired_tests": tests}
    return "\n".join(lines), data
