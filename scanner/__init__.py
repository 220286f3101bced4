"""aiscan: tell AI-generated images from real ones, at scale.

The public API is small: build a :class:`~aiscan.scanner.config.ScanConfig` and call
:func:`~aiscan.scanner.pipeline.scan`. Heavy modules load lazily, so that importing this
package (and ``aiscan --help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from aiscan.scanner.config import ScanConfig
    from aiscan.scanner.pipeline import ScanSummary, scan

__all__ = ["ScanConfig", "ScanSummary", "__version__", "scan"]


def __getattr__(name: str) -> Any:
    if name == "ScanConfig":
        from aiscan.scanner.config import ScanConfig

        return ScanConfig
    if name in ("scan", "ScanSummary"):
        from aiscan.scanner import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
