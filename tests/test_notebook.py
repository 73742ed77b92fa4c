"""notebooks/quickstart.ipynb, executed cell by cell in a real Jupyter kernel with its runs cut short (QUICK)
on synthetic data, so that the notebook a student opens cannot rot."""

import json

import pytest

from .conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_and_shows_its_results(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_BENCH_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MNIST_BENCH_NOTEBOOK_DATA", str(synthetic_data))
    monkeypatch.setenv("MNIST_BENCH_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    assert not any("Warning" in out.get("text", "") for out in outputs), "no library warnings in the way"
    text = "".join(out.get("text", "") for out in outputs) + "".join(
        out.get("data", {}).get("text/markdown", "") for out in outputs
    )
    assert "| model | status | test/acc" in text and "| cnn | ok |" in text, "the results row"
    assert "McNemar p =" in text, "the paired test of the two runs"
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 4, "the curves, the confusion matrix and the predictions are shown inline"
    runs = sorted((tmp_path / "runs").rglob("metrics.json"))
    assert len(runs) == 2 and all(json.loads(p.read_text())["status"] == "ok" for p in runs)
