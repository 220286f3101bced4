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


def test_importing_every_module_changes_no_process_wide_setting() -> None:
    """A library user (or a Ray worker) may import aiscan beside their own code: importing
    must not lift Pillow's decompression-bomb limit or touch other global state; decoding
    with aiscan may (it enforces its own limit instead)."""
    import subprocess
    import sys

    modules = [
        f"aiscan.{p}.{f.stem}"
        for p in ("model", "scanner")
        for f in sorted((ROOT / p).glob("*.py"))
        if f.stem not in ("__init__", "__main__")
    ]
    code = (
        "from PIL import Image\n"
        "before = Image.MAX_IMAGE_PIXELS\n"
        "import importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert Image.MAX_IMAGE_PIXELS == before, Image.MAX_IMAGE_PIXELS\n"
        "from aiscan.model.pixels import open_image\n"
        "import io\n"
        "buf = io.BytesIO(); Image.new('RGB', (4, 4)).save(buf, 'PNG')\n"
        "open_image(buf.getvalue()).close()\n"
        "assert Image.MAX_IMAGE_PIXELS is None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
