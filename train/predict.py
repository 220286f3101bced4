"""Score labelled images with an exported ONNX model through the scanner itself."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aiscan.train.data import Sample


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
    """Run ``aiscan`` (decode, batching, ONNX Runtime) over ``samples``.

    With ``reencode_quality``, every image is first re-saved as a JPEG of that quality
    (in a temporary folder), to see whether the model leans on file format.
    """
    from aiscan.scanner.config import ScanConfig
    from aiscan.scanner.output import read_rows
    from aiscan.scanner.pipeline import scan

    with tempfile.TemporaryDirectory(prefix="aiscan-eval-") as tmp:
        paths = [s.path for s in samples]
        if reencode_quality is not None:
            paths = _reencode(paths, Path(tmp) / "jpeg", reencode_quality)
        out = Path(tmp) / "scores.csv"
        scan(
            ScanConfig(
                paths=tuple(paths), out=out, model=Path(model), batch_size=batch_size, device="cpu"
            )
        )
        rows = {r.path: r for r in read_rows(out)}
    p_ai = np.array([np.nan if rows[p].p_ai is None else rows[p].p_ai for p in paths])
    errors = {
        s.path: rows[p].error for s, p in zip(samples, paths, strict=True) if rows[p].status != "ok"
    }
    return Scores(list(samples), p_ai, errors)


def _reencode(paths: list[str], folder: Path, quality: int) -> list[str]:
    folder.mkdir(parents=True)
    out = []
    for i, path in enumerate(paths):
        target = folder / f"{i:07d}.jpg"
        with Image.open(path) as img:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, "JPEG", quality=quality)
        target.write_bytes(buf.getvalue())
        out.append(str(target))
    return out
