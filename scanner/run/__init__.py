"""A scan, on top of the engines, the nightly state and the output: its configuration
(:class:`ScanConfig`, extending :class:`DetectorConfig`), the walk, the rows
(:class:`Verdicts`), the run with its writer and state (:func:`scan`) and its summary."""

from .config import DECODERS, ENGINES, EVIDENCE_POLICIES, DetectorConfig, ScanConfig
from .pipeline import Verdicts, iter_verdicts, scan
from .summary import Progress, ScanSummary

__all__ = [
    "DECODERS",
    "ENGINES",
    "EVIDENCE_POLICIES",
    "DetectorConfig",
    "Progress",
    "ScanConfig",
    "ScanSummary",
    "Verdicts",
    "iter_verdicts",
    "scan",
]
