"""The packages' import graph: the model contract imports no other aiscan package, and no
two packages import each other, directly or through a third (imports inside functions
count too)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "scanner", "export", "train", "benchmarks")
#: Who may import whom: the layering the README's Layout section describes.
ALLOWED = {
    "model": set(),
    "scanner": {"model"},
    "train": {"model", "scanner"},
    "export": {"model", "scanner", "train"},
    "benchmarks": {"model", "scanner"},
}


def _imports(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """aiscan packages that ``package`` imports, each with the files that do."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "aiscan" and len(parts) > 1 and parts[1] != package:
                    found.setdefault(parts[1], set()).add(str(path.relative_to(root)))
    return found


def test_package_imports_follow_the_layering_and_have_no_cycle() -> None:
    graph = {p: _imports(p) for p in PACKAGES}
    for package, deps in graph.items():
        extra = {d: sorted(files) for d, files in deps.items() if d not in ALLOWED[package]}
        assert not extra, f"{package} imports {extra}"
    try:
        list(TopologicalSorter({p: set(d) for p, d in graph.items()}).static_order())
    except CycleError as exc:  # pragma: no cover - the layering above already excludes it
        pytest.fail(f"import cycle between packages: {exc.args[1]}")


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    # the graph is read from the source, so a lazy import cannot hide a dependency
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import aiscan.pkg.b\n"
        "def f():\n    from aiscan.train.data import LABELS\n    return LABELS\n"
    )
    assert _imports("pkg", tmp_path) == {"train": {"pkg/a.py"}}
