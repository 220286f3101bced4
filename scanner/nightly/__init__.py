"""Nightly jobs, on top of the output layer: the state database of earlier runs
(:class:`ScanState`: what is new, changed, deleted; verdicts of identical content; drift
between nights) and the merge of shard outputs (:func:`merge`)."""

from .shards import MergeError, MergeReport, merge
from .state import DRIFT_BOUNDS, ScanState, StateError, StateStats, current_rows

__all__ = [
    "DRIFT_BOUNDS",
    "MergeError",
    "MergeReport",
    "ScanState",
    "StateError",
    "StateStats",
    "current_rows",
    "merge",
]
