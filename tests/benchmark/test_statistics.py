"""The benchmark's statistics against cases worked by hand: Wilson's interval, Student's t over seeds,
McNemar's exact test, Holm's correction, and the paired tests read from runs' per-image predictions."""

import math

import numpy as np
import pytest

from mnist_bench.benchmark.report.comparison import compare_models, markdown_section
from mnist_bench.benchmark.report.stats import (
    PairedTest,
    holm,
    mcnemar_exact,
    paired_tests,
    seed_interval,
    wilson_interval,
)
from mnist_bench.plots import save_figure
from mnist_bench.plots.benchmark import paired_tests_figure


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(8, 10), (9_279, 10_000), (10_000, 10_000), (0, 50)])
def test_wilson_interval_is_the_score_interval(k, n):
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)
    assert 0 <= low <= k / n <= high <= 1
    if k == n:
        assert high == pytest.approx(1.0) and low < 1, "all right still leaves doubt below"


def test_wilson_on_ten_thousand_images_is_about_half_a_point_wide():
    low, high = wilson_interval(9_279, 10_000)
    assert 100 * (high - low) == pytest.approx(1.01, abs=0.01)


def test_seed_interval_is_student_s_t():
    low, high = seed_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) × sd / √n
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    assert seed_interval([0.9]) is None
    assert seed_interval([0.9, 0.9]) == (0.9, 0.9)


def test_mcnemar_exact_on_a_hand_made_table():
    # 10 images only a got right, 2 only b, 88 both: p = 2 × P(X <= 2), X ~ Binomial(12, 1/2) = 2 × 79 / 4096
    a = np.array([True] * 10 + [False] * 2 + [True] * 88)
    b = np.array([False] * 10 + [True] * 2 + [True] * 88)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (10, 2)
    assert p == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(a, a)[2] == pytest.approx(1.0), "identical predictions: nothing to tell apart"


def test_holm_adjusts_in_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_a_reading_in_plain_words():
    test = PairedTest("vgg16", "cnn", 42, 10_000, 9_956, 9_948, 40, 32, 0.41, 1.0)
    assert test.reading() == (
        "vgg16 vs cnn: 8 more correct out of 10,000 (vgg16 alone right on 40, cnn alone on 32), "
        "p = 0.41, Holm-adjusted = 1: not significant"
    )
    assert not test.significant
    assert PairedTest("a", "b", 42, 100, 90, 80, 12, 2, 0.01, 0.03).significant
    assert (
        "p < 0.001, Holm-adjusted < 0.001: significant"
        in PairedTest("a", "b", 1, 9, 9, 0, 9, 0, 1e-5, 1e-4).reading()
    )


def _run_dir(tmp_path, name: str, target: np.ndarray, pred: np.ndarray) -> str:
    run_dir = tmp_path / name
    run_dir.mkdir()
    np.savez_compressed(
        run_dir / "test_predictions.npz",
        index=np.arange(len(target)),
        target=target,
        pred=pred,
        confidence=np.ones(len(target), dtype=np.float32),
        model=np.array(name),
        dataset=np.array("mnist"),
        class_names=np.array(list("0123456789")),
    )
    return str(run_dir)


def test_paired_tests_from_runs_predictions(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 10, 1000)
    good = target.copy()
    good[:20] = (good[:20] + 1) % 10  # 98.0%
    bad = target.copy()
    bad[:120] = (bad[:120] + 1) % 10  # 88.0%: wrong wherever good is, and on 100 more
    close = target.copy()
    close[980:1000] = (close[980:1000] + 1) % 10  # 98.0% too, wrong on other images
    rows = [
        {"model": m, "seed": 42, "status": "ok", "run_dir": _run_dir(tmp_path, m, target, p)}
        for m, p in (("good", good), ("bad", bad), ("close", close))
    ]
    rows.append({"model": "broken", "seed": 42, "status": "failed", "run_dir": None})
    rows.append({"model": "old", "seed": 42, "status": "ok", "run_dir": str(tmp_path)})  # no predictions file
    tests, skipped = paired_tests(rows)
    by_pair = {(t.a, t.b): t for t in tests}
    assert set(by_pair) == {("good", "bad"), ("good", "close"), ("bad", "close")}
    assert by_pair[("good", "bad")].only_a == 100 and by_pair[("good", "bad")].only_b == 0
    assert by_pair[("good", "bad")].significant
    assert (by_pair[("good", "close")].only_a, by_pair[("good", "close")].only_b) == (20, 20)
    assert not by_pair[("good", "close")].significant
    assert by_pair[("good", "bad")].p_holm == pytest.approx(min(1.0, 3 * by_pair[("good", "bad")].p))
    assert any("old" in s and "no per-image predictions" in s for s in skipped)

    comparison = compare_models(rows)
    text = markdown_section(comparison)
    assert "| good | — |" in text and "+10.00 (p <0.001)*" in text
    assert "good vs close: the same number right out of 1,000" in text
    path = save_figure(paired_tests_figure(comparison), tmp_path / "paired.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_on_different_test_sets_are_not_compared(tmp_path):
    target = np.arange(100) % 10
    rows = [
        {"model": "a", "seed": 42, "status": "ok", "run_dir": _run_dir(tmp_path, "a", target, target)},
        {"model": "b", "seed": 42, "status": "ok", "run_dir": _run_dir(tmp_path, "b", target[::-1], target)},
    ]
    tests, skipped = paired_tests(rows)
    assert tests == [] and skipped == ["a vs b (seed 42): not scored on the same test images"]
    assert "No pair of models could be compared" in markdown_section(compare_models(rows))


def test_ab_of_two_results_folders_pairs_each_model_seed_by_seed(tmp_path):
    import json

    from mnist_bench.benchmark.experiments.ab import main as ab_main

    rng = np.random.default_rng(1)
    target = rng.integers(0, 10, 1000)

    def arm(name: str, wrong_by_seed: dict[int, int]) -> None:
        folder = tmp_path / name
        folder.mkdir()
        rows = []
        for seed, wrong in wrong_by_seed.items():
            pred = target.copy()
            pred[:wrong] = (pred[:wrong] + 1) % 10
            run = _run_dir(tmp_path, f"{name}_{seed}", target, pred)
            rows.append(
                {
                    "model": "cnn",
                    "seed": seed,
                    "status": "ok",
                    "run_dir": run,
                    "test/acc": 1 - wrong / 1000,
                    "time/fit_s": 10.0,
                }
            )
        rows.append({"model": "vit", "seed": 42, "status": "failed", "run_dir": None})
        (folder / "benchmark.json").write_text(json.dumps({"rows": rows}))

    arm("off", {42: 100, 43: 110, 44: 90})
    arm("on", {42: 20, 43: 30, 44: 25})  # right wherever "off" is, and on ~80 more images per seed
    assert (
        ab_main(
            [
                "--a",
                str(tmp_path / "off"),
                "--b",
                str(tmp_path / "on"),
                "--labels",
                "EMA off",
                "EMA on",
                "--output",
                str(tmp_path / "ab.v1"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "ab.v1.json").read_text())
    (summary,) = result["summary"]
    assert summary["model"] == "cnn" and summary["seeds"] == [42, 43, 44]
    assert summary["mean_diff"] == pytest.approx((80 + 80 + 65) / 3 / 1000)
    assert summary["ci_diff"][0] > 0, "every seed gains: the paired interval excludes zero"
    assert len(result["tests"]) == 3 and all(t["significant"] for t in result["tests"])
    assert all(t["a"] == "cnn EMA off" and t["only_b"] >= 65 for t in result["tests"])
    text = (tmp_path / "ab.v1.md").read_text()
    assert "| cnn | 42, 43, 44 | 90.00%, 89.00%, 91.00% |" in text and "+7.50 points" in text
    assert "published test set" not in text and result["unofficial_test_set"] == []


def test_ab_names_runs_scored_on_an_unofficial_test_set(tmp_path):
    import json

    from mnist_bench.benchmark.experiments.ab import main as ab_main

    target = np.arange(100) % 10
    for arm, official in (("a", True), ("b", False)):
        (tmp_path / arm).mkdir()
        row = {
            "model": "cnn",
            "seed": 42,
            "status": "ok",
            "test/acc": 1.0,
            "test/official": official,
            "run_dir": _run_dir(tmp_path, f"run_{arm}", target, target),
        }  # no time/fit_s: shown as a dash
        (tmp_path / arm / "benchmark.json").write_text(json.dumps({"rows": [row]}))
    assert (
        ab_main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--output", str(tmp_path / "x")])
        == 0
    )
    assert (
        "Not on the published test set (its size or md5 differs): cnn B (seed 42)."
        in (tmp_path / "x.md").read_text()
    )


def test_ab_of_a_folder_without_a_benchmark_is_one_line(tmp_path, capsys):
    from mnist_bench.benchmark.experiments.ab import main as ab_main

    (tmp_path / "other").mkdir()
    assert (
        ab_main(["--a", str(tmp_path), "--b", str(tmp_path / "other"), "--output", str(tmp_path / "x")]) == 1
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "benchmark.json" in err


@pytest.mark.parametrize("value", ["abc", None, float("nan"), 1.5, True])
def test_ab_of_a_row_whose_accuracy_is_not_a_number_is_one_line(tmp_path, capsys, value):
    import json

    from mnist_bench.benchmark.experiments.ab import main as ab_main

    (tmp_path / "benchmark.json").write_text(
        json.dumps({"rows": [{"model": "cnn", "seed": 42, "status": "ok", "test/acc": value}]})
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "benchmark.json").write_text((tmp_path / "benchmark.json").read_text())
    assert (
        ab_main(["--a", str(tmp_path), "--b", str(tmp_path / "other"), "--output", str(tmp_path / "x")]) == 1
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "benchmark.json" in err and "test/acc" in err
    assert not (tmp_path / "x.json").exists()


def _ab_arms(tmp_path, acc_b: float = 1.0):
    import json

    target = np.arange(100) % 10
    for arm in ("a", "b"):
        (tmp_path / arm).mkdir()
        row = {
            "model": "cnn",
            "seed": 42,
            "status": "ok",
            "test/acc": 1.0 if arm == "a" else acc_b,
            "run_dir": _run_dir(tmp_path, f"run_{arm}", target, target),
        }
        (tmp_path / arm / "benchmark.json").write_text(json.dumps({"rows": [row]}))


def test_ab_refuses_a_figure_its_runs_predictions_do_not_give(tmp_path, capsys):
    from mnist_bench.benchmark.experiments.ab import main as ab_main

    _ab_arms(tmp_path, acc_b=0.95)  # every prediction of b's run is right: 100%, not 95%
    assert (
        ab_main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--output", str(tmp_path / "x")])
        == 1
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "test_predictions.npz gives" in err
    assert not (tmp_path / "x.json").exists()


def test_ab_never_writes_over_its_inputs_or_an_earlier_output_unasked(tmp_path, capsys):
    from mnist_bench.benchmark.experiments.ab import main as ab_main

    _ab_arms(tmp_path)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    before = (tmp_path / "a/benchmark.json").read_text()
    for args in (
        ["--a", a, "--b", b, "--output", f"{a}/benchmark", "--overwrite"],
        ["--a", a, "--b", a, "--output", str(tmp_path / "x")],
    ):
        assert ab_main(args) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert (tmp_path / "a/benchmark.json").read_text() == before
    assert ab_main(["--a", a, "--b", b, "--output", str(tmp_path / "x")]) == 0
    assert ab_main(["--a", a, "--b", b, "--output", str(tmp_path / "x")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert ab_main(["--a", a, "--b", b, "--output", str(tmp_path / "x"), "--overwrite"]) == 0


def test_an_accuracys_seed_interval_stays_within_0_and_1():
    low, high = seed_interval([0.2, 0.99])  # two seeds far apart: the t interval runs far past both ends
    assert low < 0 and high > 1
    assert seed_interval([0.2, 0.99], bounds=(0.0, 1.0)) == (0.0, 1.0)
    from mnist_bench.benchmark.report.aggregate import summarize

    rows = [
        {"model": "cnn", "seed": s, "status": "ok", "test/acc": a, "time/fit_s": 1.0}
        for s, a in ((42, 0.2), (43, 0.99))
    ]
    (summary,) = summarize(rows)
    assert tuple(summary["test/acc_seed_ci"]) == (0.0, 1.0)
