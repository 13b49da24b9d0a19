"""No upward import and no import circle: every module of msa_agent/, kernels/ and store/
checked against a declared floor (docs/architecture.md, "Floors"). Static: files are parsed
with ``ast``, nothing is imported.

Rules. A module may import its own unit (the subpackage or top-level module it belongs to)
and any unit on a lower floor; a higher floor is an upward import, another unit on the same
floor a sideways one (allowed only where ``SIDEWAYS`` says why). Every import statement
counts, wherever it is: at module level, inside a function (a lazy import is still a
dependency, and the usual way to hide a circle), and under ``if TYPE_CHECKING:`` (an upward
type import still couples the lower floor to the higher one's names; such a type belongs on
the lower floor or behind a Protocol). Separately, no circle between modules, whatever the
floors.

The package root ``msa_agent/__init__.py`` re-exports and may import anything. Importing a
name from it resolves to the module that defines it (its ``_LAZY`` table); its own constants
(``__version__``) import nothing, and the root is loaded before any submodule anyway.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where each installed package's files are (pyproject.toml, [tool.setuptools] package-dir)
# (the shortest name is the package root)
ROOTS = {"msa_agent": REPO / "msa_agent", "msa_agent.kernels": REPO / "kernels",
         "msa_agent.store": REPO / "store"}  # fmt: skip

FLOORS = {
    # 0: the one error root; it imports nothing, and every error, the store's included
    # (``StoreError(MsaError)``), derives from it
    "msa_agent.errors": 0,
    # 1: the store and the kernels (standalone: arrays and rows, tensors), and the plain
    # declarations the floors above share
    "msa_agent.kernels": 1,
    "msa_agent.store": 1,
    "msa_agent.config": 1,
    "msa_agent.types": 1,
    # 2: the model adapter (loader, encoder, router, attention)
    "msa_agent.model": 2,
    # 3: the runtime (routing, reading, residency, bundles) and router training
    "msa_agent.runtime": 3,
    "msa_agent.train": 3,
    # 4: the facade
    "msa_agent.memory": 4,
    # 5: the facade's coroutines (AsyncMemory: each a Memory call in a worker thread)
    "msa_agent.async_memory": 5,
    # 6: what users and benchmarks run, through the facade: the CLI, the plug-ins (whose
    # async paths are AsyncMemory calls), the benchmarks, the server (HTTP, MCP, inspector)
    # and the Memory Parallel entry point
    "msa_agent.cli": 6,
    "msa_agent.integrations": 6,
    "msa_agent.bench": 6,
    "msa_agent.serve": 6,
    "msa_agent.parallel": 6,
}

# (importer unit, imported unit) on one floor -> why it is allowed (one way only).
SIDEWAYS: dict[tuple[str, str], str] = {
    ("msa_agent.cli", "msa_agent.bench"): "`msa bench` is the CLI face of the benchmark suite",
    ("msa_agent.cli", "msa_agent.serve"): "`msa serve` runs the server, and the CLI's commands "
                                          "use its client when a server is configured",
    ("msa_agent.bench", "msa_agent.parallel"): "the Memory Parallel benchmark times "
                                               "`ParallelMemory`, the entry point users run",
}


def find_modules(roots: dict[str, Path]) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every .py file under ``roots``."""
    mods: dict[str, tuple[Path, bool]] = {}
    for pkg, root in roots.items():
        for f in sorted(root.rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            mods[".".join([pkg, *(parts[:-1] if is_pkg else parts)])] = (f, is_pkg)
    return mods


def lazy_names(mods: dict[str, tuple[Path, bool]], root: str) -> dict[str, str]:
    """The root's ``_LAZY`` table: public name -> the module that defines it."""
    tree = ast.parse(mods[root][0].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return {}


def imported(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom,
             mods: dict[str, tuple[Path, bool]], root: str,
             lazy: dict[str, str]) -> Iterator[str]:  # fmt: skip
    """The module(s) one import statement loads, absolute; relative levels resolved."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    target = node.module or ""
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join([*base, *([node.module] if node.module else [])])
    for a in node.names:
        if f"{target}.{a.name}" in mods:
            yield f"{target}.{a.name}"
        elif target == root and a.name in lazy:
            yield lazy[a.name]
        elif target != root:  # the root's own constants import nothing
            yield target


def import_edges(roots: dict[str, Path]) -> Iterator[tuple[str, str, Path, int]]:
    """(importer, imported, file, line) for every import of a module of ``roots``."""
    mods, root = find_modules(roots), min(roots, key=len)
    lazy = lazy_names(mods, root)
    for mod, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in dict.fromkeys(imported(mod, is_pkg, node, mods, root, lazy)):
                    yield mod, target, path, node.lineno


def unit_of(mod: str, floors: dict[str, int]) -> str | None:
    """The longest declared unit that ``mod`` is, or is inside."""
    hits = [u for u in floors if mod == u or mod.startswith(u + ".")]
    return max(hits, key=len) if hits else None


def floor_violations(roots: dict[str, Path], floors: dict[str, int],
                     sideways: dict[tuple[str, str], str]) -> list[str]:  # fmt: skip
    """One line per import that goes up, sideways (not allowed), or out of the package."""
    bad, root = [], min(roots, key=len)
    for mod, target, path, line in import_edges(roots):
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line}"
        top = target.split(".")[0]
        if top in ("kernels", "store"):
            bad.append(f"{where}: {mod} imports top-level {target!r}: use msa_agent.{target}")
            continue
        if top != root or mod == root:
            continue
        ua, ub = unit_of(mod, floors), unit_of(target, floors)
        if ua is None or ub is None or ua == ub:
            continue  # an undeclared module fails test_every_module_has_a_floor
        fa, fb = floors[ua], floors[ub]
        if fb > fa:
            bad.append(f"{where}: {mod} (floor {fa}) imports {target} (floor {fb}): upward")
        elif fb == fa and (ua, ub) not in sideways:
            bad.append(f"{where}: {mod} imports {target}, sideways on floor {fa} "
                       f"({ua} -> {ub} is not in SIDEWAYS)")  # fmt: skip
    return bad


def circles(roots: dict[str, Path]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in find_modules(roots)}
    for mod, target, _, _ in import_edges(roots):
        if target in graph and target != mod:
            graph[mod].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor() -> None:
    missing = [m for m in find_modules(ROOTS) if m != "msa_agent" and unit_of(m, FLOORS) is None]
    assert not missing, f"declare a floor for {missing} in FLOORS (and docs/architecture.md)"
    stale = [u for u in FLOORS if not any(unit_of(m, {u: 0}) for m in find_modules(ROOTS))]
    assert not stale, f"FLOORS declares units with no module: {stale}"


def test_no_upward_or_sideways_import() -> None:
    bad = floor_violations(ROOTS, FLOORS, SIDEWAYS)
    assert not bad, "imports against the floors:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    found = circles(ROOTS)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """A tiny tree with an upward import under TYPE_CHECKING, a sideways one inside a
    function, a relative circle, and allowed imports."""
    files = {
        "__init__.py": '_LAZY = {"Top": "pkg.top"}\n__version__ = "1"\n',
        "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import T\n",
        "mid/__init__.py": "",
        "mid/a.py": "from . import b\nfrom ..low import x\nfrom pkg import __version__\n",
        "mid/b.py": "from .a import y\n",
        "side.py": "def f():\n    import pkg.mid.a\n",
        "top.py": "from pkg import Top, low\nimport pkg.mid\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    roots = {"pkg": tmp_path}
    floors = {"pkg.low": 1, "pkg.mid": 2, "pkg.side": 2, "pkg.top": 3}
    bad = floor_violations(roots, floors, {})
    assert len(bad) == 2, bad
    assert "pkg.low (floor 1) imports pkg.top (floor 3): upward" in bad[0]
    assert "pkg.side imports pkg.mid.a, sideways on floor 2" in bad[1]
    assert len(floor_violations(roots, floors, {("pkg.side", "pkg.mid"): "test"})) == 1
    assert circles(roots) == [["pkg.low", "pkg.top"], ["pkg.mid.a", "pkg.mid.b"]]


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
