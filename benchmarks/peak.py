"""Run the aiscan CLI in this process and write its own peak RSS to a file at the end.

python -m aiscan.benchmarks.peak REPORT_FILE AISCAN_ARGS...

Why not ``wait4``'s ``ru_maxrss``: on Linux a child inherits its parent's high-water mark
at fork, and exec does not reset it, so a benchmark process holding 800 MB sees every
child "peak" at 800 MB or more. ``VmHWM`` in ``/proc/self/status`` belongs to the new
address space that exec creates, so it is the scan's own.
"""

from __future__ import annotations

import sys
from pathlib import Path


def vm_hwm_kib() -> int:
    """This process's peak resident set size in KiB (Linux), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")


def main(argv: list[str]) -> int:
    from aiscan.scanner.cli import main as scan

    report, args = Path(argv[0]), argv[1:]
    try:
        return scan(args)
    finally:
        report.write_text(f"{vm_hwm_kib()}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
