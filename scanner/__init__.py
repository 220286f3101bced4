"""aiscan: tell AI-generated images from real ones, at scale.

The public face: build a :class:`ScanConfig` and call :func:`scan` (a verdict file and
its summary), iterate :func:`iter_verdicts` (rows, no file), or hold a :class:`Detector`
(a model opened once, for files, trees or bytes in memory). Inside, the scanner is in
layers, each importing only the ones below it (README, "Layout"):

    core     per-file and per-batch work: discover, sniff, evidence, decode, DALI,
             infer, the verdict policy, the row
    output   verdict files: formats, the writer and its journal, the lock, sidecars
    nightly  the state database of earlier runs, merging shard outputs
    engines  the local engine (thread pools) and the Ray engine, one interface
    run      a scan: its configuration, the walk, the summary
    leaves   the API (api), the HTML report (report), Prometheus (prometheus), the CLI

Modules load lazily, so that importing this package (and ``aiscan --help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiscan.model.version import __version__

if TYPE_CHECKING:
    from .api import Detector
    from .core.rows import Row
    from .run.config import ScanConfig
    from .run.pipeline import iter_verdicts, scan
    from .run.summary import ScanSummary

__all__ = ["Detector", "Row", "ScanConfig", "ScanSummary", "__version__", "iter_verdicts", "scan"]

_WHERE = {
    "Detector": ".api",
    "Row": ".core.rows",
    "ScanConfig": ".run.config",
    "ScanSummary": ".run.summary",
    "iter_verdicts": ".run.pipeline",
    "scan": ".run.pipeline",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_WHERE[name], __name__), name)
