"""The architecture is a checked contract: the import-linter contracts of setup.cfg hold, no
module imports (directly or through others) a module that imports it back, and at most one import
points up the layers (the one setup.cfg names and explains)."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _import_cycles(package: str) -> list[list[str]]:
    """Strongly connected components of more than one module in the package's import graph."""
    graph = grimp.build_graph(package)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules}
             for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def _layers() -> list[list[str]]:
    """The layers of setup.cfg's layers contract, top first; `a | b` is one layer of two packages."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["importlinter:contract:layers"]["layers"].split("\n")
    return [[p.strip() for p in line.split("|")] for line in lines if line.strip()]


def _ignored_imports() -> set[tuple[str, str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["importlinter:contract:layers"].get("ignore_imports", "").split("\n")
    return {tuple(p.strip() for p in line.split("->")) for line in lines if line.strip()}


def _upward_imports(package: str, layers: list[list[str]]) -> list[tuple[str, str]]:
    """Direct imports (TYPE_CHECKING ones included, as grimp reads them) from a module of a lower
    layer to a module of a higher one, or between two packages of one layer."""
    rank = {pkg: i for i, layer in enumerate(layers) for pkg in layer}

    def layer_of(module: str) -> str | None:
        return next((p for p in rank if module == p or module.startswith(p + ".")), None)

    graph = grimp.build_graph(package)
    up = []
    for importer in sorted(graph.modules):
        a = layer_of(importer)
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            b = layer_of(imported) if imported in graph.modules else None
            if a is not None and b is not None and a != b and rank[a] >= rank[b]:
                up.append((importer, imported))
    return up


def test_no_import_cycles():
    assert _import_cycles("flowclas_ros") == []


def test_cycle_finder_sees_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic_pkg import b\n")
    (pkg / "b.py").write_text("from cyclic_pkg import a\n")
    (pkg / "c.py").write_text("from cyclic_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_cycles("cyclic_pkg") == [["cyclic_pkg.a", "cyclic_pkg.b"]]


def test_at_most_one_import_points_up():
    up = _upward_imports("flowclas_ros", _layers())
    assert len(up) <= 1, up
    assert set(up) == _ignored_imports(), "setup.cfg's ignore_imports must name exactly the upward imports"


def test_upward_import_finder_sees_one(tmp_path, monkeypatch):
    pkg = tmp_path / "layered_pkg"
    for sub in ("", "high", "low"):
        (pkg / sub).mkdir(exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "high" / "a.py").write_text("from layered_pkg.low import b\n")
    (pkg / "low" / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from layered_pkg.high import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    layers = [["layered_pkg.high"], ["layered_pkg.low"]]
    assert _upward_imports("layered_pkg", layers) == [("layered_pkg.low.b", "layered_pkg.high.a")]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (the dev extra)")
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") >= 5
