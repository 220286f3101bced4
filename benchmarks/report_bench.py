"""What ``aiscan report`` costs on a large verdict file: build time and page size.

aiscan-bench --report 100000

A tree of N real JPEGs (hard links to 16 generated 1024x768 photo mosaics, so N files
cost almost no disk) in folders of 1,000, and a verdict CSV for it written by aiscan's
own writer: p_ai drawn from a seeded two-humped distribution, 1% error rows, 2% of files
declaring AI in their metadata and 5% claiming a camera. Then ``write_report`` with its
defaults (200 flagged thumbnails, 200 disagreements), timed in this process.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.scanner.core.rows import Row
from aiscan.scanner.output.formats import chunked
from aiscan.scanner.output.writer import VerdictWriter
from aiscan.scanner.report import write_report

from .corpus import make_corpus


def linked_tree(
    root: Path, count: int, data_dir: Path | None = None, per_dir: int = 1000
) -> list[Path]:
    """``count`` file names in folders of ``per_dir``, hard links to 16 1024x768 JPEGs."""
    blobs = make_corpus(root, "1024px", 16, data_dir=data_dir).files
    folder = root / f"linked-{count}"
    files = [folder / f"{i // per_dir:04d}" / f"{i:07d}.jpg" for i in range(count)]
    for i, f in enumerate(files):
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            os.link(blobs[i % len(blobs)], f)
    return files


def _rows(files: list[Path], threshold: float, seed: int = 0) -> Iterator[Row]:
    rng = np.random.default_rng(seed)
    n = len(files)
    p_ai = np.where(rng.random(n) < 0.4, rng.beta(5, 2, n), rng.beta(2, 5, n))
    error = rng.random(n) < 0.01
    kind = rng.random(n)
    for i, f in enumerate(files):
        if error[i]:
            yield Row(
                path=str(f), status="error", p_ai=None, verdict="",
                error="cannot identify image file", format="", width=None, height=None,
                bytes=None, sha256="", model="bench",
            )  # fmt: skip
            continue
        p = round(float(p_ai[i]), 6)
        evidence = (
            "ai-declared" if kind[i] < 0.02 else "camera-claimed" if kind[i] < 0.07 else "none"
        )
        yield Row(
            path=str(f), status="ok", p_ai=p, verdict="ai" if p >= threshold else "real",
            error="", format="JPEG", width=1024, height=768, bytes=f.stat().st_size, sha256="",
            model="bench", evidence=evidence,
        )  # fmt: skip


def report_bench(root: Path, count: int, data_dir: Path | None = None) -> dict[str, Any]:
    """Build the report of a ``count``-row verdict file; its time, size and contents."""
    files = linked_tree(root, count, data_dir)
    out_dir = Path(tempfile.mkdtemp(prefix="aiscan-report-"))
    verdicts = out_dir / "v.csv"
    writer = VerdictWriter(verdicts, "csv", overwrite=True)
    for chunk in chunked(_rows(files, 0.5)):
        writer.write(chunk)
    writer.finish()
    page = out_dir / "report.html"
    t0 = time.perf_counter()
    head = write_report(verdicts, page)
    seconds = time.perf_counter() - t0
    return {
        "rows": head["rows"],
        "images": "1024x768 JPEG",
        "flagged": head["flagged"],
        "gallery": head["gallery"],
        "disagreements": head["disagreements"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(head["rows"] / seconds),
        "bytes": head["bytes"],
        "verdict_file_bytes": verdicts.stat().st_size,
    }
