"""Limits per file: size, lying headers, decode memory, decode time, and a shutdown that
never waits on a stuck file. Hostile files are generated here."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from aiscan.model.pixels import DecodeBudget, ImageTooLargeError
from aiscan.scanner.cli import main
from aiscan.scanner.cli.common import EXIT_FILE_ERRORS, EXIT_INTERRUPTED
from aiscan.scanner.output.formats import read_rows
from tests.conftest import encode, jpeg_bytes, photo


def _scan(tree: Path, out: Path, model: Path, *extra: str) -> dict[str, tuple[str, str]]:
    rc = main([str(tree), "--out", str(out), "--model", str(model), "-q", *extra])
    rows = {Path(r.path).name: (r.status, r.error) for r in read_rows(out)}
    assert rc == (EXIT_FILE_ERRORS if any(s == "error" for s, _ in rows.values()) else 0)
    return rows


def _lying_jpeg(width: int, height: int) -> bytes:
    """A real 256x171 JPEG whose frame header claims ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(photo(256, 171)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("decoder", ["cpu", "dali"])
def test_a_jpeg_header_that_lies_about_its_size_is_an_error(
    tiny_model: Path, tmp_path: Path, decoder: str
) -> None:
    if decoder == "dali":
        pytest.importorskip("nvidia.dali")
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "liar.jpg").write_bytes(_lying_jpeg(15000, 15000))
    (tree / "good.jpg").write_bytes(jpeg_bytes(photo(256, 171)))
    rows = _scan(tree, tmp_path / "v.csv", tiny_model, "--decoder", decoder)
    assert rows["good.jpg"][0] == "ok"
    status, error = rows["liar.jpg"]
    assert status == "error" and "JPEG data ends early" in error and "15000x15000" in error


def test_files_over_the_size_limit_are_not_read(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    big = jpeg_bytes(photo(1200, 900)) + os.urandom(2 * 2**20)  # junk after a real JPEG
    (tree / "big.jpg").write_bytes(big)
    (tree / "small.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    out = tmp_path / "v.csv"
    rows = _scan(tree, out, tiny_model, "--max-file-size", "1", "--sha256")
    assert rows["small.jpg"][0] == "ok"
    assert rows["big.jpg"] == (
        "error",
        "file is 2 MB, over the limit of 1 MB (see --max-file-size)",
    )
    sha = {Path(r.path).name: r.sha256 for r in read_rows(out)}
    assert sha["small.jpg"] == hashlib.sha256((tree / "small.jpg").read_bytes()).hexdigest()


def test_an_image_that_needs_more_than_the_decode_memory_is_refused(
    tiny_model: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "wide.png").write_bytes(encode(Image.new("RGB", (6000, 4000), (9, 99, 199)), "PNG"))
    (tree / "small.png").write_bytes(encode(photo(64, 64), "PNG"))
    rows = _scan(tree, tmp_path / "v.csv", tiny_model, "--decode-memory", "256")
    assert rows["small.png"][0] == "ok"
    status, error = rows["wide.png"]  # 24 MP x (4 bytes stored + two 4-byte copies)
    assert status == "error" and "needs about 275 MB" in error and "--decode-memory" in error
    again = _scan(tree, tmp_path / "w.csv", tiny_model, "--decode-memory", "512")
    assert again["wide.png"][0] == "ok"


def test_decode_budget_makes_large_decodes_take_turns() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    blocked = threading.Event()  # set when the second reservation waits for the budget
    real_wait_for = budget._cond.wait_for

    def wait_for(predicate, timeout=None):  # type: ignore[no-untyped-def]
        if not predicate():
            blocked.set()
        return real_wait_for(predicate, timeout)

    budget._cond.wait_for = wait_for  # type: ignore[method-assign]
    with budget.reserve(60):
        t = threading.Thread(target=lambda: _hold(budget, 60, order))
        t.start()
        assert blocked.wait(10)  # the second decode is waiting, not merely late
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second ran"]  # the second waited for the first
    with (
        pytest.raises(ImageTooLargeError, match="over the decode memory budget"),
        budget.reserve(101),
    ):
        pass


def _hold(budget: DecodeBudget, n: int, order: list[str]) -> None:
    with budget.reserve(n):
        order.append("second ran")


def test_a_file_that_decodes_too_long_is_abandoned(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiscan.scanner.core.decode import CpuDecoder

    tree = tmp_path / "t"
    tree.mkdir()
    for name in ("a.jpg", "stuck.jpg", "z.jpg"):
        (tree / name).write_bytes(jpeg_bytes(photo(64, 64)))
    real = CpuDecoder._decode

    def slow(self, item, source, fmt):  # type: ignore[no-untyped-def]
        if item.path.endswith("stuck.jpg"):
            time.sleep(30)
        return real(self, item, source, fmt)

    monkeypatch.setattr(CpuDecoder, "_decode", slow)
    t0 = time.monotonic()
    rows = _scan(tree, tmp_path / "v.csv", tiny_model, "--decode-timeout", "0.5")
    assert time.monotonic() - t0 < 15
    assert rows["a.jpg"][0] == rows["z.jpg"][0] == "ok"
    assert rows["stuck.jpg"] == (
        "error",
        "decoding took longer than 0.5 s (see --decode-timeout); abandoned",
    )


def test_sigterm_does_not_wait_for_a_stuck_decode(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    for i in range(4):
        (tree / f"{i}.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    script = (
        "import sys, time\n"
        "from aiscan.scanner.core.decode import CpuDecoder\n"
        "import os\n"
        "def stuck(*a):\n"
        "    os.write(1, b'stuck\\n')  # one write: two threads' lines never interleave\n"
        "    time.sleep(600)\n"
        "CpuDecoder._decode = stuck\n"
        "from aiscan.scanner.cli import main\n"
        "print('started', flush=True)\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "v.csv"
    cmd = [sys.executable, "-c", script, str(tree), "--out", str(out), "--model", str(tiny_model)]
    proc = subprocess.Popen(
        [*cmd, "-q", "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
    # both decode threads are inside a decode that never ends (each says so)
    assert [proc.stdout.readline().strip() for _ in range(2)] == [b"stuck", b"stuck"]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert rc == EXIT_INTERRUPTED
    assert time.monotonic() - t0 < 10


def test_a_huge_png_of_zeros_is_refused_without_being_decoded(
    tiny_model: Path, tmp_path: Path
) -> None:
    """15000x15000 (under --max-pixels) in 0.7 MB: refused by the memory budget before a
    pixel is decoded; the scan's peak memory stays far below the 900 MB a decode needs."""
    from aiscan.benchmarks.hostile import zero_png

    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "zeros.png").write_bytes(zero_png(15000, 15000))
    out, report = tmp_path / "v.csv", tmp_path / "peak"
    cmd = [sys.executable, "-m", "aiscan.benchmarks.peak", str(report), str(tree), "-q"]
    cmd += ["--out", str(out), "--model", str(tiny_model)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == EXIT_FILE_ERRORS, proc.stderr
    peak_mib = int(report.read_text()) / 1024  # the child's own VmHWM
    assert peak_mib < 500, peak_mib
    (row,) = read_rows(out)
    assert row.status == "error" and "over the decode memory budget" in row.error
