"""Peak memory of a real ``aiscan`` process on trees of different sizes."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .corpus import texture


def small_tree(root: Path, count: int, per_dir: int = 1000) -> Path:
    """``count`` small JPEGs (160x120) in folders of ``per_dir``; reused when present."""
    folder = root / f"small-{count}"
    marker = root / f"small-{count}.complete"  # beside the tree: not a file to scan
    if marker.exists():
        return folder
    blobs = []
    for seed in range(16):
        buf = io.BytesIO()
        texture(160, 120, seed).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    for i in range(count):
        f = folder / f"{i // per_dir:04d}" / f"{i:07d}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(blobs[i % len(blobs)])
    marker.write_text("ok\n")
    return folder


@dataclass(frozen=True)
class MemoryRun:
    files: int
    peak_rss_mib: float
    seconds: float
    exit_code: int

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "seconds": round(self.seconds, 2),
            "exit_code": self.exit_code,
        }


def peak_rss(tree: Path, model: Path, out: Path, files: int, *extra: str) -> MemoryRun:
    """Run the aiscan CLI in a child process that reports its own peak RSS (VmHWM; see
    :mod:`aiscan.benchmarks.peak` for why not wait4's rusage)."""
    report = out.with_name(out.name + ".peak")
    cmd = [
        sys.executable,
        "-m",
        "aiscan.benchmarks.peak",
        str(report),
        str(tree),
        "--out",
        str(out),
        "--model",
        str(model),
        "--quiet",
        "--overwrite",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    peak_kib = int(report.read_text())
    return MemoryRun(files, peak_kib / 1024, time.perf_counter() - t0, proc.returncode)
