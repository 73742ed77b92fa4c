"""Evaluation beyond accuracy on hand-made cases: calibration figures with known values, attacks that stay in
their ball, FLOP counts by hand, and one real end-to-end evaluation of a tiny trained run."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from mnist_bench.evaluate import calibration
from mnist_bench.evaluate.attacks import AttackSettings, adversarial_images, attacked_correct
from mnist_bench.evaluate.cost import flops_per_image
from mnist_bench.models import CNN, FasterRCNNClassifier

from ..conftest import ROOT


def two_class_set(confidence: float, accuracy: float, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """n images, each predicted class 0 with ``confidence``; the first ``accuracy * n`` are really class 0."""
    probs = np.tile([confidence, 1 - confidence], (n, 1))
    target = np.ones(n, dtype=np.int64)
    target[: int(round(accuracy * n))] = 0
    return probs, target


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_when_it_does_not():
    probs, target = two_class_set(0.8, 0.8)
    assert calibration.ece(probs, target) == pytest.approx(0.0, abs=1e-4)
    probs, target = two_class_set(0.9, 0.6)  # overconfident by 0.3 in its only bin
    assert calibration.ece(probs, target) == pytest.approx(0.3, abs=1e-4)
    # two bins by hand: half at 0.95 all right (gap 0.05), half at 0.65 with 35% right (gap 0.3): ECE 0.175
    p1, t1 = two_class_set(0.95, 1.0, 500)
    p2, t2 = two_class_set(0.65, 0.35, 500)
    assert calibration.ece(np.vstack([p1, p2]), np.concatenate([t1, t2])) == pytest.approx(0.175, abs=1e-4)


def test_nll_and_brier_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    target = np.array([0, 2])
    assert calibration.nll(probs, target) == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2)
    assert calibration.brier(probs, target) == pytest.approx(
        ((0.09 + 0.04 + 0.01) + (0.01 + 0.64 + 0.81)) / 2
    )


def test_temperature_scaling_cools_an_overconfident_model_and_lowers_its_nll():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 10)) * 3
    target = np.array(
        [rng.choice(10, p=np.exp(row) / np.exp(row).sum()) for row in logits]
    )  # calibrated at T=1
    hot = np.exp(logits * 2.5)
    hot /= hot.sum(axis=1, keepdims=True)  # the same model, overconfident: logits scaled by 2.5
    fitted = calibration.fit_temperature(hot, target)
    assert fitted == pytest.approx(2.5, rel=0.1)
    assert calibration.nll(calibration.scaled(hot, fitted), target) < calibration.nll(hot, target) - 0.05
    result = calibration.calibrate(hot[:2000], target[:2000], hot[2000:], target[2000:])
    assert result.after["ece"] < result.before["ece"] / 2 and result.after["nll"] < result.before["nll"]


def test_the_detectors_scores_become_a_distribution():
    scores = np.array([[0.9, 0.6, 0.0], [0.0, 0.0, 0.0]], dtype=np.float16)
    probs = calibration.as_probabilities(scores)
    assert np.allclose(probs.sum(axis=1), 1) and probs[0, 0] == pytest.approx(
        0.9 / 1.5, rel=1e-3
    )  # float16 scores
    assert np.allclose(probs[1], 1 / 3)


def test_reliability_bins_count_every_image_once():
    probs, target = two_class_set(0.9, 0.6)
    bins = calibration.reliability(probs, target)
    assert sum(bins["count"]) == 1000 and bins["count"][13] == 1000  # 0.9 is in (0.8667, 0.9333]
    assert bins["accuracy"][13] == pytest.approx(0.6) and bins["confidence"][0] is None


def test_flop_count_of_one_layer_nets_matches_the_hand_count():
    assert flops_per_image(nn.Linear(784, 10), torch.zeros(1, 784)) == 2 * 784 * 10
    conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)  # 28×28 outputs × 4 channels × 9 multiply-adds
    assert flops_per_image(conv, torch.zeros(1, 1, 28, 28)) == 2 * 28 * 28 * 4 * 9


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    pixels = (rng.random((6, 1, 28, 28)) > 0.8).astype(np.float32)
    pixels[:, :, :4] = 0.0  # some pixels at the bottom of the range, some at the top
    pixels[:, :, -4:] = 1.0
    return pixels, rng.integers(0, 10, 6)


@pytest.mark.parametrize("model_class", [CNN, FasterRCNNClassifier])
@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_an_attack_stays_in_its_ball_and_the_pixel_range(model_class, method, digits):
    torch.manual_seed(0)
    model = model_class().eval()
    pixels, labels = digits
    settings = AttackSettings(pgd_steps=3)
    assert np.array_equal(adversarial_images(model, pixels, labels, method, 0.0, settings), pixels)
    adv = adversarial_images(model, pixels, labels, method, 0.1, settings)
    assert adv.shape == pixels.shape and adv.dtype == np.float32
    assert np.abs(adv - pixels).max() <= 0.1 + 1e-6 and adv.min() >= 0.0 and adv.max() <= 1.0
    moved = np.abs(adv - pixels)[:, :, 4:-4]  # inside the range the gradient moves pixels by up to the budget
    assert moved.max() > 0.05, f"{model_class.__name__} {method}: the attack changed nothing"
    again = adversarial_images(model, pixels, labels, method, 0.1, settings)
    assert np.array_equal(adv, again)  # seeded: the same adversarial images every time


def test_pgd_does_at_least_as_much_harm_as_nothing_and_clean_is_the_models_own_reading(digits):
    torch.manual_seed(0)
    model = CNN().eval()
    pixels, labels = digits
    with torch.no_grad():
        own = model.class_scores(model.dataset.normalize(torch.from_numpy(pixels))).argmax(1).numpy()
    right = attacked_correct(model, pixels, own, AttackSettings(epsilons=(0.3,), pgd_steps=5))
    assert right["clean"].all()  # labelled with its own predictions, it reads every clean image right
    assert right["pgd@0.3"].mean() < 1.0 and set(right) == {"clean", "fgsm@0.3", "pgd@0.3"}


def test_a_trained_run_is_evaluated_end_to_end_and_reused_after(
    tiny_fit_args, synthetic_data, tmp_path, capsys
):
    """A one-epoch CNN on the synthetic set through the real commands: the report, its JSON and its pictures,
    and a second evaluation that reuses the first."""
    from mnist_bench.cli import main
    from mnist_bench.evaluate.__main__ import main as evaluate_main
    from mnist_bench.evaluate.corruptions import CORRUPTIONS

    main(["fit", "--config", str(ROOT / "configs/cnn.yaml"), *tiny_fit_args, "--trainer.max_epochs=1"])
    (run,) = (tmp_path / "lightning_logs" / "cnn").glob("version_*")
    out = tmp_path / "report"
    args = [
        "--runs",
        str(run),
        "--data_dir",
        str(synthetic_data),
        "--output",
        str(out),
        "--corruption_images",
        "40",
        "--attack_images",
        "12",
        "--pgd_steps",
        "2",
        "--latency_calls",
        "3",
    ]
    assert evaluate_main(args) == 0
    record = json.loads((run / "evaluation.json").read_text())
    assert record["n_corruption"] == 40 and record["n_attack"] == 12
    assert set(record["accuracy"]) == {
        "clean",
        "corruption/mean",
        *(f"corruption/{c}" for c in CORRUPTIONS),
        *(
            f"attack/{a}"
            for a in ["clean"] + [f"{m}@{e:g}" for e in (0.05, 0.1, 0.2, 0.3) for m in ("fgsm", "pgd")]
        ),
    }
    assert all(0.0 <= v <= 1.0 for v in record["accuracy"].values())
    cost = record["cost"]
    assert cost["flops"] > 1e6 and cost["params"] == json.loads((run / "metrics.json").read_text())["params"]
    assert cost["onnx_bytes"] > 1e5 and cost["latency"]["p95_ms"] >= cost["latency"]["median_ms"] > 0
    assert record["calibration"]["temperature"] > 0
    text = (out / "robustness.md").read_text()
    for heading in ("## Corruptions", "## Adversarial attacks", "## Calibration", "## Cost"):
        assert heading in text
    pictures = sorted(p.name for p in (out / "robustness").glob("*.png"))
    assert pictures == sorted(
        [
            "corruption_heatmap.png",
            "accuracy_vs_epsilon.png",
            "reliability_diagrams.png",
            "reliability_overlay.png",
            "accuracy_vs_cost.png",
            "corruption_samples.png",
        ]
    )
    capsys.readouterr()
    assert evaluate_main(args) == 0
    assert "reused" in capsys.readouterr().out
    assert json.loads((run / "evaluation.json").read_text())["key"] == record["key"]


def test_a_run_that_did_not_finish_is_one_line(tmp_path, capsys):
    from mnist_bench.evaluate.__main__ import main as evaluate_main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: {}\n")
    (run / "metrics.json").write_text(json.dumps({"model": "cnn", "status": "interrupted"}))
    assert evaluate_main(["--runs", str(run), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did not finish ok" in err and "'interrupted'" in err, err
    assert not (tmp_path / "out").exists()


def test_the_bootstrap_ece_is_torchmetrics_ece_and_its_spread_shrinks_with_more_images():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=3000)
    target = rng.integers(0, 10, 3000)
    conf, right = probs.max(axis=1), (probs.argmax(axis=1) == target).astype(float)
    assert calibration.ece_of(conf, right) == pytest.approx(calibration.ece(probs, target), abs=1e-5)
    small = calibration.ece_bootstrap(conf[:300], right[:300])[:, 0]
    large = calibration.ece_bootstrap(conf, right)[:, 0]
    assert small.std() > 2 * large.std() > 0
    paired = calibration.ece_bootstrap(conf, right, others=[(conf, right)])
    assert np.array_equal(paired[:, 0], paired[:, 1])  # the same resamples for both models


def test_no_benchmark_yet_is_one_line_that_says_what_to_run(tmp_path, capsys):
    from mnist_bench.evaluate.__main__ import main as evaluate_main

    assert evaluate_main(["--results", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "benchmark.json not found" in err and "make benchmark" in err, err
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "benchmark.json").write_text(
        json.dumps({"rows": [{"model": "cnn", "status": "failed"}]})
    )
    assert evaluate_main(["--results", str(tmp_path / "results")]) == 1
    assert "no finished run" in capsys.readouterr().err
