"""What a scan reports while it runs (:class:`Progress`) and when it ends (:class:`ScanSummary`)."""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aiscan.model.version import __version__


@dataclass
class Progress:
    """A snapshot for progress displays.

    Attributes:
        done: files given a row in this run.
        total: files this run will cover, once the walk of the tree has finished.
        found: files the walk has found so far (``total`` once it has finished).
        reused: files whose verdict came from the state database (identical content).
        ok_images: images classified in this run.
        statuses: rows per status in this run.
        elapsed_s: seconds since the first file was submitted.
    """

    done: int = 0
    total: int | None = None
    found: int = 0
    reused: int = 0
    ok_images: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0


@dataclass
class ScanSummary:
    """What a scan did; also written as JSON next to the output."""

    out: str
    format: str
    model_id: str
    model_sha256: str
    model_trained: bool
    providers: list[str]
    provider_note: str
    decoder: str
    dali_failed_batches: int
    threshold: float
    real_below: float
    batch_size: int
    statuses: dict[str, int]
    verdicts: dict[str, int]
    #: what judged the output's rows (model, band, rows): more than one entry only where
    #: --mix-models kept rows of another judge
    judges: list[dict[str, Any]]
    files_this_run: int
    files_resumed: int
    elapsed_s: float
    images_per_s: float
    interrupted: bool
    started: str
    finished: str
    config: dict[str, Any]
    versions: dict[str, str]
    warnings: list[str]
    state: dict[str, Any] | None = None
    #: the first error rows of this run (path and reason), for the terminal summary
    error_sample: list[dict[str, str]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.statuses.get("error", 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def versions() -> dict[str, str]:
    import onnxruntime
    import PIL

    return {
        "aiscan": __version__,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
