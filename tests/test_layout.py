"""The package's shape: no module imports another that imports it back, and the CLI knows
nothing of the sweep's classes (an error carries its own exit code and run status)."""

import ast
from pathlib import Path

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
                found.append(path[path.index(nxt):] + [nxt])
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
    """A pruned trial's exit code and its run's status come with the error, not from the CLI naming its class."""
    from mnist_bench.sweep.pruning import PRUNED_EXIT, TrialPruned

    source = (PACKAGE / "cli" / "main.py").read_text() + (PACKAGE / "callbacks" / "report.py").read_text()
    assert "TrialPruned" not in source
    assert TrialPruned("x").exit_code == PRUNED_EXIT and TrialPruned("x").status == "pruned"
