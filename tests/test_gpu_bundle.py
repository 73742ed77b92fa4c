"""make gpu-bundle refuses to replace what is not a bundle; gpu_check.sh stamps the bundle's commit only on
its code."""

import subprocess
import sys

from mnist_bench.provenance import source_digest

from .conftest import ROOT


def test_the_bundle_folder_must_be_a_bundle_inside_the_repository(tmp_path):
    script = str(ROOT / "scripts" / "gpu_bundle.py")
    for target, says in (
        (".", "must be a folder inside"),
        ("configs", "not empty and holds no earlier bundle"),
        (str(tmp_path), "must be a folder inside"),
    ):
        proc = subprocess.run([sys.executable, script, target], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-500:]
    assert (ROOT / "configs" / "cnn.yaml").is_file() and (ROOT / "mnist_bench").is_dir()


def test_source_digest_changes_with_the_code(tmp_path):
    for rel in ("mnist_bench/a.py", "configs/cnn.yaml", "Makefile"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    before = source_digest(tmp_path)
    (tmp_path / "README.md").write_text("prose does not count")
    assert source_digest(tmp_path) == before
    (tmp_path / "configs" / "cnn.yaml").write_text("max_epochs: 6")
    assert source_digest(tmp_path) != before
