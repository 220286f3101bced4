"""The nightly job's costs: a first full scan with a state, the second night on the same
unchanged tree, the state's size, and (optionally) the Ray engine against the local one.

aiscan-bench --nightly 20000 [--ray]
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _scan(tree: Path, out: Path, model: Path, *extra: str) -> dict[str, Any]:
    """One aiscan run in a child process: wall time, its own peak RSS, its summary."""
    for suffix in ("", ".partial", ".partial.jsonl", ".summary.json", ".peak"):
        out.with_name(out.name + suffix).unlink(missing_ok=True)  # an earlier run's, too
    report = out.with_name(out.name + ".peak")
    cmd = [sys.executable, "-m", "aiscan.benchmarks.peak", str(report), str(tree)]
    cmd += ["--out", str(out), "--model", str(model), "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"aiscan failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    return {
        "seconds": round(wall, 2),
        "peak_rss_mib": round(int(report.read_text()) / 1024, 1),
        "files_scanned": summary["files_this_run"],
        "state": summary.get("state"),
    }


def _db_bytes(db: Path) -> int:
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def nightly(tree: Path, files: int, model: Path, work: Path, ray: bool) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    db = work / "scans.db"
    for stale in work.glob("scans.db*"):
        stale.unlink()
    first = _scan(tree, work / "night1.csv", model, "--state", str(db))
    second = _scan(tree, work / "night2.csv", model, "--state", str(db))
    size = _db_bytes(db)
    result: dict[str, Any] = {
        "files": files,
        "first_night": first,
        "second_night": second,
        "second_night_speedup": round(first["seconds"] / max(second["seconds"], 1e-9), 1),
        "state_bytes": size,
        "state_bytes_per_million_files": int(size / files * 1_000_000),
    }
    if ray:
        local = _scan(tree, work / "local.csv", model)
        on_ray = _scan(tree, work / "ray.csv", model, "--engine", "ray")
        same = (work / "local.csv").read_bytes() == (work / "ray.csv").read_bytes()
        result["engines"] = {
            "local": local,
            "ray": on_ray,
            "ray_over_local": round(on_ray["seconds"] / max(local["seconds"], 1e-9), 2),
            "identical_rows": same,
        }
    return result
