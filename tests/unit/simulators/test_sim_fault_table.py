"""The scenario's fault kinds, the plant's fault table and the node table agree."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from simulators.nodes import VARIABLES, variable_by_path
from simulators.plant import FAULTS
from simulators.scenario import FaultKind

REPO = Path(__file__).resolve().parents[3]
MODULES = sorted(p.stem for p in (REPO / "simulators").glob("*.py") if p.stem != "__init__")


def test_every_fault_kind_has_one_action() -> None:
    assert set(FAULTS) == set(get_args(FaultKind))


def test_only_faults_that_end_say_when_without_a_duration() -> None:
    for kind, action in FAULTS.items():
        if action.ends_after_s is not None:
            assert action.end is not None, kind


def test_node_table_paths_are_unique_and_found() -> None:
    paths = ["/".join(v.path) for v in VARIABLES]
    assert len(set(paths)) == len(paths)
    assert all(variable_by_path(p).path == v.path for p, v in zip(paths, VARIABLES, strict=True))
    with pytest.raises(KeyError, match="no variable"):
        variable_by_path("Production/NoSuchCounter")


def _imports(module: str) -> set[str]:
    """The simulators modules ``module`` imports anywhere (also inside functions)."""
    tree = ast.parse((REPO / "simulators" / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found.update(n.split(".")[1] for n in names
                     if n.startswith("simulators.") and n.count(".") == 1)
    return found


def test_simulator_modules_import_no_cycle() -> None:
    graph = {m: _imports(m) for m in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())
