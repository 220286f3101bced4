"""Scan a generated set of hostile files and record what happened and what it cost.

python -m aiscan.benchmarks.hostile [--model M.onnx] [--work DIR] [--junk-mb 600]

Every file must get exactly one row with a status. The whole set is scanned once, then
each case alone (its own scan, its own process), and the peak RSS, wall time and exit
status of each go to ``benchmarks/results/hostile_<machine>.json``. The set: empty, text
named .jpg, truncated JPEG, a JPEG whose header claims 15000x15000 over 256x171 of data,
a 15000x15000 PNG of zeros (about 0.7 MB on disk, 675 MB decoded), a PNG header claiming
60000x60000, a large junk file that starts like a JPEG (sparse on disk), non-UTF-8 and
rich-markup file names (a "[/b]" in a folder name is in tests/test_scan.py), a FIFO,
a broken link, and good images (unreadable files: tests/test_scan.py, as root cannot
make one); and the evidence parsers' bombs: PNGs of a few KB whose metadata repeats what
made regular expressions backtrack (an XMP packet of DigitalSourceType repeated, SD
``parameters`` of ``Steps: 1`` repeated with no ``Sampler:``; each under Pillow's 1 MB
text limit, a few KB compressed), and a 200,000-character ``Model:`` value, which must
come out cut in the row.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

from PIL import Image

from aiscan.model.clip import cache_dir
from aiscan.model.console import Parser

from .runners import machine


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(width: int, height: int) -> bytes:
    """A valid RGB PNG of zeros, compressed as it is streamed (never held decoded)."""
    row = b"\x00" * (1 + 3 * width)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + (_png_chunk(b"IEND", b""))
    )


def _png_with_text(chunks: dict[str, str], xmp: str | None = None) -> bytes:
    """An 8x8 PNG with these text chunks (zTXt: a few KB for any repeated text)."""
    import io

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=True)
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp, zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    import io

    import numpy as np

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build(root: Path, junk_mb: int) -> dict[str, str]:
    """Write the hostile set under ``root``, each case in a folder of its own (``root /
    case-NN``); map file name -> expected status."""
    root.mkdir(parents=True, exist_ok=True)
    good = _jpeg(640, 480)
    expect: dict[str, str] = {}

    def case() -> Path:
        folder = root / f"case-{len(expect):02d}"
        folder.mkdir()
        return folder

    def put(name: str | bytes, data: bytes, status: str) -> None:
        path = os.path.join(os.fsencode(case()), os.fsencode(name))
        with open(path, "wb") as fh:
            fh.write(data)
        expect[os.fsdecode(os.path.basename(path))] = status

    put("good.jpg", good, "ok")
    put("empty.jpg", b"", "error")
    put("text.jpg", b"not an image\n", "error")
    put("truncated.jpg", good[: len(good) // 2], "error")
    lying = bytearray(_jpeg(256, 171))
    sof = lying.index(b"\xff\xc0")
    lying[sof + 5 : sof + 9] = struct.pack(">HH", 15000, 15000)
    put("lying-header.jpg", bytes(lying), "error")
    put("zeros-15000x15000.png", zero_png(15000, 15000), "error")
    huge = bytearray(zero_png(8, 8))
    huge[16:24] = struct.pack(">II", 60000, 60000)
    huge[29:33] = struct.pack(">I", zlib.crc32(bytes(huge[12:29])))
    put("huge-header.png", bytes(huge), "error")
    put(b"caf\xe9-latin1.jpg", good, "ok")
    put("[bold]markup[red].jpg", good, "ok")
    put("xmp-dst-bomb.png", _png_with_text({}, "<x " + "DigitalSourceType " * 50_000), "ok")
    put("sd-steps-bomb.png", _png_with_text({"parameters": "Steps: 1 " * 100_000}), "ok")
    long_model = "Steps: 20, Sampler: Euler, Model: " + "m" * 200_000
    put("sd-model-200k.png", _png_with_text({"parameters": long_model}), "ok")
    junk = case() / "junk-starts-like-jpeg.jpg"
    with junk.open("wb") as fh:
        fh.write(good[:4096])
        fh.truncate(junk_mb * 2**20)  # sparse: large on paper, nothing on disk
    expect[junk.name] = "error"
    os.mkfifo(case() / "pipe.jpg")
    expect["pipe.jpg"] = "skipped"
    link = case() / "dead-link.jpg"
    link.symlink_to(root / "nowhere")
    expect["dead-link.jpg"] = "error"
    return expect


def _scan(tree: Path, out: Path, model: str | None) -> dict[str, object]:
    """One scan of ``tree`` in a child process: its exit status, wall time, peak RSS, rows."""
    from aiscan.scanner.output.formats import read_rows
    from aiscan.scanner.output.sidecars import sidecars

    for left in sidecars(out).all():  # a previous run's output, journal, summary...
        left.unlink(missing_ok=True)
    report = out.with_name(out.name + ".peak")
    cmd = [sys.executable, "-m", "aiscan.benchmarks.peak", str(report), str(tree)]
    cmd += ["--out", str(out), "-q"] + (["--model", model] if model else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    rows = read_rows(out) if out.exists() else []
    return {
        "exit_status": proc.returncode,
        "stderr_tail": proc.stderr[-2000:],
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(int(report.read_text()) / 1024, 1),
        "rows": {os.path.basename(r.path): (r.status, r.error, len(r.generator_hint))
                 for r in rows},
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(args.work)
    tree = work / "hostile"
    if tree.exists():
        subprocess.run(["rm", "-rf", str(tree)], check=True)
    expect = build(tree, args.junk_mb)
    whole = _scan(tree, work / "hostile.csv", args.model)
    got = whole.pop("rows")
    assert isinstance(got, dict)
    cases = {}
    for folder in sorted(tree.iterdir()):
        alone = _scan(folder, work / f"{folder.name}.csv", args.model)
        rows = alone.pop("rows")
        assert isinstance(rows, dict)
        (name, (status, error, hint)), *more = rows.items() or [("?", ("missing", "", 0))]
        cases[name] = dict(alone, status=status, error=error, hint_chars=hint, rows=1 + len(more))
    return {
        "machine": machine(),
        "files": len(expect),
        "rows": len(got),
        **whole,
        "every_file_once": sorted(got) == sorted(expect) and len(got) == len(expect),
        "as_expected": {n: got.get(n, ("missing",))[0] == s for n, s in expect.items()},
        "rows_by_file": {n: {"status": r[0], "error": r[1]} for n, r in sorted(got.items())},
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m aiscan.benchmarks.hostile", description=__doc__)
    p.add_argument("--model", help="model to scan with (default: the shipped one)")
    p.add_argument(
        "--work",
        default=str(cache_dir() / "hostile"),
        help="where the hostile set is written (default: aiscan's user cache)",
    )
    p.add_argument("--junk-mb", type=int, default=600, help="size of the sparse junk file")
    p.add_argument("--results-dir", default="benchmarks/results")
    args = p.parse_args(argv)
    result = run(args)
    cores = len(os.sched_getaffinity(0))
    path = Path(args.results_dir) / f"hostile_cpu{cores}core.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    expected = result["as_expected"]
    assert isinstance(expected, dict)
    print(
        f"{result['rows']} rows for {result['files']} files, exit {result['exit_status']}, "
        f"peak RSS {result['peak_rss_mib']} MiB, {result['wall_s']} s; every file once: "
        f"{result['every_file_once']}; all as expected: {all(expected.values())}; "
        f"results: {path}"
    )
    return 0 if result["every_file_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
