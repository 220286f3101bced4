"""The import graph, read from the source (imports inside functions count too):

* between packages: the model contract imports no other aiscan package, and the others
  follow :data:`ALLOWED`;
* inside the scanner: its layers (:data:`SCANNER_LAYERS`) import only layers below them,
  nothing inside imports the package's public face, and relative imports stay inside
  their package;
* no import cycle between any two modules, at any level.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "scanner", "export", "train", "benchmarks")
#: Who may import whom: the layering docs/development.md's layout describes.
ALLOWED = {
    "model": set(),
    "scanner": {"model"},
    "train": {"model", "scanner"},
    "export": {"model", "scanner", "train"},
    "benchmarks": {"model", "scanner"},
}
#: The scanner's layers, lowest first: a module may import its own layer's modules and
#: those of lower layers. Layers of the same rank (nightly, engines) do not import each
#: other. The public face (scanner/__init__.py) is above everything and imported by none.
SCANNER_LAYERS = {
    "core": 0,
    "output": 1,
    "nightly": 2,
    "engines": 2,
    "run": 3,
    "api": 4,
    "report": 4,
    "prometheus": 4,
    "cli": 5,
}


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` (dotted module names), at ``where``."""

    source: str
    target: str
    where: str
    relative: bool


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["aiscan", *parts])


def _edges(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Edge]:
    """Every import of an aiscan module in ``packages``, resolved to the module it names
    (``from a import b`` names module ``a.b`` where that is a module, else ``a``)."""
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    modules = {_module_name(p, root) for p in files}
    edges = []
    for path in files:
        name = _module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        where = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text(), where)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] == "aiscan":
                    edges.append(Edge(name, target, where, bool(getattr(node, "level", 0))))
    return edges


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _layer(module: str) -> str | None:
    """The scanner layer of a module (None: the scanner's public face, or not scanner)."""
    parts = module.split(".")
    if parts[:2] != ["aiscan", "scanner"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] != "models" else None


def _package_violations(edges: list[Edge]) -> list[str]:
    return [
        f"{e.where}: {e.source} imports {e.target}"
        for e in edges
        if _package(e.target) != _package(e.source)
        and _package(e.target) not in ALLOWED[_package(e.source)]
    ]


def _layer_violations(edges: list[Edge]) -> list[str]:
    bad = []
    for e in edges:
        if _package(e.source) != "scanner" or _package(e.target) != "scanner":
            if e.relative and _package(e.source) != _package(e.target):
                bad.append(f"{e.where}: a relative import leaves its package ({e.target})")
            continue
        src, dst = _layer(e.source), _layer(e.target)
        if dst is None and e.target == "aiscan.scanner" and src is not None:
            bad.append(f"{e.where}: imports the scanner's public face from inside it")
        if src is None or dst is None or src == dst:
            continue
        if SCANNER_LAYERS[dst] >= SCANNER_LAYERS[src]:
            bad.append(f"{e.where}: layer {src} imports layer {dst} ({e.target})")
    return bad


def _cycle(edges: list[Edge]) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set())
        if e.target != e.source:
            graph[e.source].add(e.target)
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return list(exc.args[1])
    return None


def test_package_imports_follow_the_layering() -> None:
    assert not _package_violations(_edges())


def test_scanner_layers_import_only_downwards() -> None:
    assert not _layer_violations(_edges())


def test_no_import_cycle_between_modules() -> None:
    assert _cycle(_edges()) is None


def test_every_scanner_module_is_in_a_layer() -> None:
    folders = {p.name for p in (ROOT / "scanner").iterdir() if p.is_dir() and p.name != "models"}
    folders |= {p.stem for p in (ROOT / "scanner").glob("*.py") if p.stem != "__init__"}
    folders -= {"__pycache__"}
    assert folders == set(SCANNER_LAYERS)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_sees_lazy_relative_and_upward_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "model/__init__.py": "",
            "model/a.py": "def f():\n    from aiscan.train.data import LABELS\n",
            "train/__init__.py": "",
            "train/data.py": "LABELS = 1\n",
            "scanner/__init__.py": "",
            "scanner/core/__init__.py": "",
            "scanner/core/x.py": "def f():\n    from ..run.pipeline import scan\n",
            "scanner/core/y.py": "from .. import anything\n",
            "scanner/run/__init__.py": "",
            "scanner/run/pipeline.py": "from ..core import x\nscan = 1\n",
        },
    )
    edges = _edges(root, ("model", "train", "scanner"))
    assert _package_violations(edges) == ["model/a.py: aiscan.model.a imports aiscan.train.data"]
    layered = _layer_violations(edges)
    assert (
        "scanner/core/x.py: layer core imports layer run (aiscan.scanner.run.pipeline)" in layered
    )
    assert "scanner/core/y.py: imports the scanner's public face from inside it" in layered
    assert set(_cycle(edges) or ()) == {"aiscan.scanner.core.x", "aiscan.scanner.run.pipeline"}


def test_the_checker_resolves_relative_imports_to_modules(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "scanner/__init__.py": "",
            "scanner/output/__init__.py": "from .writer import W\n",
            "scanner/output/writer.py": "from ..core.rows import Row\nfrom . import lock\n",
            "scanner/output/lock.py": "",
            "scanner/core/__init__.py": "",
            "scanner/core/rows.py": "Row = 1\n",
        },
    )
    targets = {(e.source, e.target) for e in _edges(root, ("scanner",))}
    assert targets == {
        ("aiscan.scanner.output", "aiscan.scanner.output.writer"),
        ("aiscan.scanner.output.writer", "aiscan.scanner.core.rows"),
        ("aiscan.scanner.output.writer", "aiscan.scanner.output.lock"),
    }


def test_importing_every_module_changes_no_process_wide_setting() -> None:
    """A library user (or a Ray worker) may import aiscan beside their own code: importing
    must not lift Pillow's decompression-bomb limit or touch other global state; decoding
    with aiscan may (it enforces its own limit instead)."""
    import subprocess
    import sys

    modules = sorted(
        _module_name(f, ROOT)
        for p in ("model", "scanner")
        for f in (ROOT / p).rglob("*.py")
        if f.stem != "__main__"
    )
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


def test_relative_imports_only_inside_packages() -> None:
    """A script folder (train/recipes, benchmarks/gpu) is not a package: a relative import
    there fails when the script runs (``python train/recipes/clip_card.py``)."""
    bad = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if (path.parent / "__init__.py").exists():
                continue
            tree = ast.parse(path.read_text(), str(path))
            if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)):
                bad.append(str(path.relative_to(ROOT)))
    assert not bad, bad
