"""Every test pass keeps each test image's prediction (test_predictions.npz in the run dir), in test-set
order."""

import json

import numpy as np
import pytest
import torch

from mnist_bench.callbacks.predictions import PREDICTIONS_FILE, _in_test_set_order, read_predictions
from mnist_bench.cli import main

from ..conftest import ROOT

N_TEST = 200  # the synthetic test set


@pytest.mark.parametrize("model", ["cnn", "faster_rcnn"])
def test_a_fit_keeps_every_test_image_s_prediction(model, tiny_fit_args, tmp_path):
    main(
        [
            "fit",
            "--config",
            str(ROOT / f"configs/{model}.yaml"),
            *tiny_fit_args,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.precision=32-true",
        ]
    )
    (metrics_path,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    record = read_predictions(metrics_path.parent / PREDICTIONS_FILE)
    assert record["model"] == model and record["dataset"] == "mnist"
    assert list(record["class_names"]) == [str(d) for d in range(10)]
    np.testing.assert_array_equal(record["index"], np.arange(N_TEST))
    assert record["scores"].shape == (N_TEST, 10) and record["scores"].dtype == np.float16
    np.testing.assert_array_equal(record["pred"], record["scores"].astype(np.float32).argmax(axis=1))
    np.testing.assert_allclose(record["confidence"], record["scores"].max(axis=1), rtol=2e-3)
    assert (record["pred"] == record["target"]).mean() == pytest.approx(metrics["test/acc"], abs=1e-6)
    # the targets are the test set's labels, in its order
    from torchvision.datasets import MNIST

    labels = MNIST(tiny_fit_args[0].split("=", 1)[1], train=False).targets.numpy()
    np.testing.assert_array_equal(record["target"], labels)


def test_a_model_without_scores_still_records_its_classes(tmp_path):
    from mnist_bench.callbacks.predictions import TestPredictions

    class Trainer:
        world_size, is_global_zero, datamodule = 1, True, None

    class Model:
        device, model_name = torch.device("cpu"), "mine"

        class dataset:  # noqa: N801 - the attribute a model carries
            name, class_names = "mnist", tuple("0123456789")

    callback = TestPredictions(tmp_path)
    callback.on_test_start(Trainer(), Model())
    callback.on_test_batch_end(
        Trainer(), Model(), {"preds": torch.tensor([3, 1])}, (None, torch.tensor([3, 2])), 0
    )
    callback.on_test_end(Trainer(), Model())
    record = read_predictions(tmp_path / PREDICTIONS_FILE)
    assert record["pred"].tolist() == [3, 1] and record["target"].tolist() == [3, 2]
    assert np.isnan(record["confidence"]).all() and "scores" not in record


def test_ranks_are_put_back_in_test_set_order():
    # a DistributedSampler without shuffling over 5 images and 2 ranks pads with image 0: rank 0 holds 0, 2, 4
    # and rank 1 holds 1, 3, 0
    gathered = torch.tensor([[0, 2, 4], [1, 3, 0]])
    assert _in_test_set_order(gathered)[:5].tolist() == [0, 1, 2, 3, 4]
    scores = torch.stack([gathered, gathered * 10], dim=-1)  # N×classes per rank
    assert _in_test_set_order(scores)[:5, 1].tolist() == [0, 10, 20, 30, 40]
