"""Score labelled images with an exported ONNX model through the scanner itself."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .data import Sample


@dataclass(frozen=True)
class Scores:
    """p_ai per sample (NaN where the scanner could not read the file)."""

    samples: list[Sample]
    p_ai: np.ndarray
    errors: dict[str, str]

    @property
    def is_ai(self) -> np.ndarray:
        return np.array([s.is_ai for s in self.samples])

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.p_ai)


def score(
    model: str | Path,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    reencode_quality: int | None = None,
) -> Scores:
    """Score ``samples`` through the scanner's own decode, batching and ONNX Runtime
    (:class:`aiscan.scanner.api.Detector`, on the CPU), at full precision.

    With ``reencode_quality``, every image is first re-saved in memory as a JPEG of that
    quality, to see whether the model leans on file format.
    """
    from aiscan.scanner.api import Detector

    detector = Detector(model, device="cpu", batch_size=batch_size, evidence=False)
    paths = [s.path for s in samples]
    if reencode_quality is None:
        rows = list(detector.classify_files(paths))
    else:
        rows = list(detector.classify_bytes(_reencoded(paths, reencode_quality)))
    p_ai = np.array([np.nan if r.p_ai is None else r.p_ai for r in rows])
    errors = {s.path: r.error for s, r in zip(samples, rows, strict=True) if r.status != "ok"}
    return Scores(list(samples), p_ai, errors)


def _reencoded(paths: list[str], quality: int) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        with Image.open(path) as img:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, "JPEG", quality=quality)
        yield f"{path}.q{quality}.jpg", buf.getvalue()
