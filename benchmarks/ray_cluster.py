"""``--engine ray`` on a real multi-process Ray cluster on this machine: a head node and a
worker node (``ray start``), against the local engine on the same cores.

    python -m aiscan.benchmarks.ray_cluster [--images 400] [--model fast] [--tag T]

Three scans of one generated tree (JPEGs of 320x240 and 1024x768): the local engine; Ray
on the two-node cluster; Ray again with the worker node killed (SIGKILL of its raylet and
its worker processes) half-way through, by the undisturbed Ray scan's time. The rows of
each Ray scan are held to the local scan's (the same rows, in the same order, each file
once), and the times and the kill are recorded in ``benchmarks/results/ray_cluster_<machine>.json``.
The cluster is stopped at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiscan.model.console import Parser

from .runners import machine

HEAD_PORT = 6390
WORKER_NM_PORT = 6431


def _tree(root: Path, n: int) -> Path:
    from .corpus import texture

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        size = (320, 240) if i % 2 else (1024, 768)
        texture(*size, seed=i).save(root / f"{i:05d}.jpg", quality=90)
    return root


def _ray(*args: str) -> subprocess.CompletedProcess[str]:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.run([str(ray), *args], capture_output=True, text=True, timeout=300)


def _scan(tree: Path, out: Path, model: str, engine: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", str(tree), "--out", str(out),
           "--model", model, "-q", "--overwrite", "--engine", engine]  # fmt: skip
    if engine == "ray":
        cmd += ["--ray-address", f"127.0.0.1:{HEAD_PORT}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _timed(tree: Path, out: Path, model: str, engine: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = _scan(tree, out, model, engine)
    _, err = proc.communicate(timeout=3600)
    return {"engine": engine, "seconds": round(time.perf_counter() - t0, 2),
            "exit": proc.returncode, "stderr_tail": err[-300:]}  # fmt: skip


def _worker_pids() -> list[int]:
    """The raylet of the worker node (its node manager port) and the processes it runs."""
    found = subprocess.run(
        ["pgrep", "-f", f"node_manager_port={WORKER_NM_PORT}"], capture_output=True, text=True
    ).stdout.split()
    raylets = [int(p) for p in found]
    children: list[int] = []
    for pid in raylets:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        children += [int(p) for p in kids.stdout.split()]
    return raylets + children


def _killed_run(tree: Path, out: Path, model: str, after_s: float) -> dict[str, Any]:
    """The Ray scan again, with the worker node killed ``after_s`` seconds in (half the
    undisturbed scan's time: mid-run, whatever the rows written so far; the driver may
    receive a run's rows in a few large pieces, so the journal is no clock)."""
    journal = out.with_name(out.name + ".partial")
    t0 = time.perf_counter()
    proc = _scan(tree, out, model, "ray")
    killed: list[int] = []
    seen = 0
    while proc.poll() is None and time.perf_counter() - t0 < 3600:
        if time.perf_counter() - t0 >= after_s:
            seen = journal.read_bytes().count(b"\n") - 1 if journal.exists() else 0
            killed = _worker_pids()
            for pid in killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    _, err = proc.communicate(timeout=3600)
    return {"engine": "ray, worker node killed", "seconds": round(time.perf_counter() - t0, 2),
            "exit": proc.returncode, "killed_pids": len(killed), "killed_after_s": after_s,
            "rows_written_at_kill": max(seen, 0), "stderr_tail": err[-300:]}  # fmt: skip


def _same_rows(a: Path, b: Path) -> dict[str, Any]:
    from aiscan.scanner.output.formats import read_rows

    ra, rb = read_rows(a), read_rows(b)
    paths = [r.path for r in rb]
    return {
        "rows": len(rb),
        "identical_to_local": ra == rb,
        "each_file_once": len(paths) == len(set(paths)) == len(ra),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m aiscan.benchmarks.ray_cluster", description=__doc__)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--model", default="fast")
    p.add_argument("--tag", default="")
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    # Ray's token authentication guards a cluster reachable from other machines; this
    # one listens on the loopback of one machine, and its driver and nodes share the
    # environment, so it runs without (a real cluster keeps it: docs/nightly.md).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="aiscan-ray-cluster-") as tmp:
        work = Path(tmp)
        tree = _tree(work / "tree", args.images)
        runs = [_timed(tree, work / "local.csv", args.model, "local")]
        head = _ray("start", "--head", f"--port={HEAD_PORT}", "--num-cpus=1",
                    "--include-dashboard=false", "--disable-usage-stats")  # fmt: skip
        try:
            worker = _ray(
                "start", f"--address=127.0.0.1:{HEAD_PORT}", "--num-cpus=1",
                f"--node-manager-port={WORKER_NM_PORT}", "--disable-usage-stats",
            )  # fmt: skip
            if head.returncode or worker.returncode:
                print(head.stderr[-500:], worker.stderr[-500:], file=sys.stderr)
                return 1
            ray = _timed(tree, work / "ray.csv", args.model, "ray")
            ray |= _same_rows(work / "local.csv", work / "ray.csv")
            runs.append(ray)
            killed = _killed_run(tree, work / "killed.csv", args.model, ray["seconds"] / 2)
            killed |= _same_rows(work / "local.csv", work / "killed.csv")
            runs.append(killed)
        finally:
            _ray("stop", "--force")
    result = {
        "machine": machine(),
        # Ray runs its workers at niceness 15 (Ray's worker_niceness): on a machine that
        # other work keeps busy they starve and Ray looks many times slower; read the
        # load before trusting a time
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "images": args.images,
        "model": args.model,
        "cluster": "ray start --head (1 CPU) + ray start worker node (1 CPU), this machine",
        "runs": runs,
        "ray_vs_local_time": round(runs[1]["seconds"] / runs[0]["seconds"], 2),
    }
    name = f"ray_cluster_cpu{result['machine']['cores']}core{'_' + args.tag if args.tag else ''}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = all(r.get("identical_to_local", True) and r.get("each_file_once", True) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
