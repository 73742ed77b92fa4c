"""The package's shape: no module imports another that imports it back, the CLI knows nothing of the
sweep's classes (an error carries its own exit code and run status), and the code passes ruff within its
line limit."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "mnist_bench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports (anywhere in it: an import inside a
    function is a dependency too)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_bench"):
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    graph = module_imports()
    assert "mnist_bench.sweep.study" in graph and "mnist_bench.cli.app" in graph, "the modules are found"
    assert cycles(graph) == []


def test_the_cli_entry_point_knows_no_sweep_classes():
    """A pruned trial's exit code and its run's status come with the error, not from the CLI naming its
    class."""
    from mnist_bench.callbacks.pruning import TrialPruned
    from mnist_bench.sweep.protocol import PRUNED_EXIT

    source = (PACKAGE / "cli" / "main.py").read_text() + (PACKAGE / "callbacks" / "report.py").read_text()
    assert "TrialPruned" not in source
    assert TrialPruned("x").exit_code == PRUNED_EXIT and TrialPruned("x").status == "pruned"


def test_the_cli_and_callbacks_reach_the_sweep_only_through_its_protocol():
    """A run knows a sweep only by the protocol both sides import; the Optuna study code stays in sweep/."""
    graph = module_imports()
    for module, imports in graph.items():
        if module.startswith(("mnist_bench.cli", "mnist_bench.callbacks")):
            reached = {m for m in imports if m.startswith("mnist_bench.sweep")}
            assert reached <= {"mnist_bench.sweep", "mnist_bench.sweep.protocol"}, (module, reached)


def test_the_benchmark_is_split_into_launching_reporting_and_experiments():
    """Launching runs (jobs/), reporting them (report/) and side experiments (experiments/) live apart;
    reporting never launches, and nothing but the benchmark's entry point reaches the experiments."""
    graph = module_imports()
    for module, imports in graph.items():
        if module.startswith("mnist_bench.benchmark.report"):
            assert not any(m.startswith("mnist_bench.benchmark.jobs") for m in imports), module
        if not module.startswith("mnist_bench.benchmark.experiments"):
            assert not any(m.startswith("mnist_bench.benchmark.experiments") for m in imports), module
    top = {p.stem for p in (PACKAGE / "benchmark").glob("*.py")}
    assert top == {"__init__", "__main__", "seed_unit", "seed_pipeline"}, top


def test_every_folder_of_the_package_is_a_package():
    """setuptools' find_packages leaves out a folder without ``__init__.py``: an installed wheel would lack
    it."""
    missing = [
        str(d.relative_to(ROOT))
        for d in PACKAGE.rglob("*")
        if d.is_dir() and d.name != "__pycache__" and not (d / "__init__.py").exists()
    ]
    assert missing == []


def test_the_reuse_ledger_names_files_that_exist():
    """A run's reuse key digests the package's code less the modules that only read finished runs: each such
    module exists where the ledger says, so a move cannot leave it counting as run code (or a typo skip
    nothing)."""
    from mnist_bench.benchmark.jobs import plan
    from mnist_bench.evaluate import run

    assert (plan.PACKAGE_ROOT / "mnist_bench" / "__init__.py").is_file()
    assert [name for name in plan.READS_FINISHED_RUNS if not (plan.PACKAGE_ROOT / name).is_file()] == []
    assert [p for p in run.MEASURING_CODE if not list(run.PACKAGE.glob(p))] == []


def test_the_code_passes_ruff_with_its_line_limit_and_is_formatted():
    """ruff check (E501 on: the line-length in pyproject.toml) and ruff format --check, as make lint."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.is_file():
        pytest.skip(f"no ruff next to {sys.executable}: `make install` installs the dev tools")
    paths = ["mnist_bench", "tests", "scripts"]
    for args in (["check", "--no-cache", *paths], ["format", "--check", "--no-cache", *paths]):
        done = subprocess.run([str(ruff), *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {args[0]}: {done.stdout[-3000:]}{done.stderr[-1000:]}"
