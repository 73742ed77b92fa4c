"""Real MNIST runs (marked slow; `make test` runs them after `make data`)."""

import json

import pytest

from mnist_bench.cli import main

from .conftest import REAL_DATA, ROOT, real_data_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not real_data_available(), reason="real MNIST missing: run `make data`"),
]


def test_real_mnist_is_the_official_one():
    from mnist_bench.data.idx import verify_official

    verify_official(REAL_DATA)


def test_cnn_one_epoch_on_real_mnist(tmp_path):
    main([
        "fit", "--config", str(ROOT / "configs/cnn.yaml"), f"--data.data_dir={REAL_DATA}", "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
    ])
    (run,) = (tmp_path / "lightning_logs" / "cnn").glob("version_*")
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "ok"
    assert m["test/acc"] >= 0.985, m["test/acc"]
