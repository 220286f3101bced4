"""Hostile metadata never hides the pixels from the judge, and nothing from the input
reaches the operator's terminal raw (issue 32, classes 2 to 4)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import PngImagePlugin

from aiscan.model.console import printable
from aiscan.model.preprocessing import Preprocessing
from aiscan.scanner.core.decode import CpuDecoder
from aiscan.scanner.core.discovery import Found
from aiscan.scanner.output.formats import read_rows
from tests.conftest import jpeg_bytes, photo

SPEC = Preprocessing(input_size=(32, 32))
BIG = b"x" * (PngImagePlugin.MAX_TEXT_CHUNK + 10)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(before: bytes = b"", after: bytes = b"") -> bytes:
    """A small PNG with ``before`` inserted after IHDR and ``after`` after the pixels."""
    buf = io.BytesIO()
    photo(64, 48).save(buf, "PNG")
    data = buf.getvalue()
    iend = data.rfind(b"IEND") - 4
    return data[:33] + before + data[33:iend] + after + data[iend:]


def _webp_with_exif(exif: bytes) -> bytes:
    buf = io.BytesIO()
    photo(64, 48).save(buf, "WEBP", exif=exif)
    return buf.getvalue()


#: Metadata that trips one of Pillow's guards or parsers; the pixels are fine.
HOSTILE = {
    "text-over-limit.png": _png(_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(BIG))),
    "text-after-pixels.png": _png(after=_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(BIG))),
    "xmp-compressed.png": _png(
        _chunk(b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + zlib.compress(BIG))
    ),
    "icc-oversized.png": _png(_chunk(b"iCCP", b"icc\0\0" + zlib.compress(BIG))),
    "many-text-chunks.png": _png(
        b"".join(_chunk(b"zTXt", b"k%d\0\0" % i + zlib.compress(b"y" * 900_000)) for i in range(80))
    ),
    "unknown-compression.png": _png(_chunk(b"zTXt", b"Comment\0\x07" + zlib.compress(b"hi"))),
    "junk-exif.png": _png(_chunk(b"eXIf", bytes(range(256)) * 2)),
    "junk-exif.webp": _webp_with_exif(b"Exif\0\0" + bytes(range(200))),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_metadata_never_hides_the_pixels(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    item = CpuDecoder(SPEC)(Found(str(path)))
    assert item.status == "ok" and item.pixels is not None, item.error
    assert item.evidence.kind == "metadata-anomaly", item.evidence
    assert item.evidence.detail
    clean = CpuDecoder(SPEC)(Found(str(_write(tmp_path / "clean.png", _png()))))
    if name.endswith(".png"):  # the same picture without the metadata: the same input
        assert (item.pixels == clean.pixels).all()


def test_broken_pixels_still_give_an_error_row(tmp_path: Path) -> None:
    """Setting metadata aside is a second chance for the pixels, not a pass: a PNG whose
    image data is cut keeps its error."""
    data = _png(_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(BIG)))
    idat = data.find(b"IDAT")
    path = _write(tmp_path / "cut.png", data[: idat + 40])
    item = CpuDecoder(SPEC)(Found(str(path)))
    assert item.status == "error" and item.error


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the operator's terminal ---------------------------------------------------------

#: File names an uploader controls: escape sequences (clear screen, window title,
#: colours), a forged summary line, C1 controls, DEL, a bidirectional override.
NAMES = [
    "clear\x1b[2J\x1b[H.jpg",
    "title\x1b]0;pwned\x07.jpg",
    "forged\nerror rows (0; all fine).jpg",
    "c1\u009b31m-del\x7f.jpg",
    "rtl\u202egpj.exe.jpg",
]


def _broken_tree(root: Path) -> Path:
    root.mkdir()
    for name in NAMES:
        (root / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "fine.jpg").write_bytes(jpeg_bytes(photo(40, 30)))
    return root


def _raw_controls(text: str) -> list[str]:
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
    return bad + [c for c in text if c in "\u202e\u2066\u2028"]


@pytest.mark.parametrize("quiet", [False, True])
def test_file_names_reach_the_terminal_escaped(
    tiny_model: Path, tmp_path: Path, quiet: bool
) -> None:
    tree = _broken_tree(tmp_path / "t")
    out = tmp_path / "v.csv"
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", str(tree), "--out", str(out),
           "--model", str(tiny_model), *(["-q"] if quiet else [])]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert _raw_controls(done.stderr) == [], repr(done.stderr)
    lines = done.stderr.splitlines()
    for name in NAMES:  # each name on a line of its own, escaped
        assert sum(printable(name) in line for line in lines) == 1, (name, lines)
    assert not any(line.startswith("error rows (0") for line in lines)  # nothing forged
    assert len(read_rows(out)) == len(NAMES) + 1  # the rows keep the exact names


def test_log_json_keeps_every_line_json(tiny_model: Path, tmp_path: Path) -> None:
    """--log-json: progress, third-party warnings (a JPEG with junk EXIF makes Pillow
    warn), the summary and a refused option are each one JSON object a line."""
    tree = _broken_tree(tmp_path / "t")
    exif = b"Exif\0\0MM\0\x2a" + bytes(range(256))
    (tree / "junk-exif.jpg").write_bytes(jpeg_bytes(photo(40, 30), exif=exif))
    out = tmp_path / "v.csv"
    base = [sys.executable, "-m", "aiscan.scanner.cli", str(tree), "--out", str(out),
            "--model", str(tiny_model), "--log-json"]  # fmt: skip
    done = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records[-1]["event"] == "summary"
    assert _raw_controls(done.stderr) == []
    again = subprocess.run([*base, "--threshold", "2"], capture_output=True, text=True)
    assert again.returncode == 2
    (record,) = [json.loads(line) for line in again.stderr.splitlines()]
    assert record["event"] == "error" and "--threshold" in record["message"]


def test_an_argument_error_echoing_a_path_is_escaped(tmp_path: Path) -> None:
    env = dict(os.environ, AISCAN_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", "x", "--out", "o.csv", "--format",
           "evil\x1b[2J"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "\x1b" not in done.stderr and "\\x1b[2J" in done.stderr
