"""``aiscan report``: a self-contained HTML page, checked as text and in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from aiscan.scanner.cli import main
from tests.conftest import encode, jpeg_bytes, photo


@pytest.fixture()
def scanned(tiny_model: Path, tmp_path: Path) -> Path:
    """A finished scan of a small tree: good images, a bad file, an odd file name."""
    tree = tmp_path / "photos"
    for i in range(6):
        folder = tree / ("a" if i < 4 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(photo(120, 90, seed=i)))
    (tree / "a" / '<b onmouseover="x">.png').write_bytes(encode(photo(40, 40), "PNG"))
    (tree / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "v.jsonl"
    # threshold 0: every readable image is flagged, so the gallery has them all
    args = ["--out", str(out), "--model", str(tiny_model), "--threshold", "0", "-q"]
    assert main([str(tree), *args, "--format", "jsonl"]) == 1
    return out


def test_report_is_self_contained_and_escapes_paths(scanned: Path, tmp_path: Path) -> None:
    page_path = tmp_path / "report.html"
    assert main(["report", str(scanned), "--out", str(page_path)]) == 0
    page = page_path.read_text(encoding="utf-8")
    assert page.count("class=card ") == 7  # every flagged image
    assert page.count('src="data:image/jpeg;base64,') == 7
    assert "default-src 'none'" in page  # nothing may load from elsewhere
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert '<b onmouseover="x">' not in page and "&lt;b onmouseover=&quot;x&quot;&gt;" in page
    assert ">ok</td><td class=n>7<" in page and ">error</td><td class=n>1<" in page
    assert "ai at 0" in page and "<svg" in page
    assert "None: this model has no band" in page  # no uncertain queue at threshold 0
    small = tmp_path / "small.html"
    assert main(["report", str(scanned), "--out", str(small), "--gallery", "2"]) == 0
    assert small.read_text(encoding="utf-8").count("class=card ") == 2
    assert main(["report", str(tmp_path / "nothing.csv"), "--out", str(small)]) == 2


def _camera_jpeg(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    return jpeg_bytes(photo(96, 64, seed=seed), exif=exif.tobytes())


def _sd_png(seed: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle\nSteps: 20, Sampler: Euler a, Model: sd_xl_base_1.0")
    return encode(photo(64, 64, seed=seed), "PNG", pnginfo=info)


@pytest.mark.parametrize("threshold", ["0", "1"])
def test_report_lists_files_where_evidence_and_model_disagree_first(
    tiny_model: Path, tmp_path: Path, threshold: str
) -> None:
    """At threshold 1 the model calls everything real: the SD PNGs (declared AI) disagree;
    at 0 it calls everything AI: the camera JPEGs disagree. Plain files never do."""
    tree = tmp_path / "t"
    tree.mkdir()
    for i in range(3):
        (tree / f"sd{i}.png").write_bytes(_sd_png(i))
        (tree / f"cam{i}.jpg").write_bytes(_camera_jpeg(i))
        (tree / f"plain{i}.jpg").write_bytes(jpeg_bytes(photo(80, 60, seed=10 + i)))
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "v.csv"
    args = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main([*args, "--threshold", threshold]) == 1  # the broken file
    page_path = tmp_path / "r.html"
    assert main(["report", str(out), "--out", str(page_path), "--gallery", "2"]) == 0
    page = page_path.read_text(encoding="utf-8")
    section = page.split("<div id=disagree>")[1].split("</div>\n")[0]
    names = re.findall(r'data-path="[^"]*/([^"/]+)"', section)
    expected = "sd" if threshold == "1" else "cam"
    assert len(names) == 2 and all(n.startswith(expected) for n in names)  # bounded
    assert "3 files where the metadata and the model disagree" in page
    why = "declared AI, scored real" if threshold == "1" else "camera-claimed, scored AI"
    assert section.count(why) == 2
    # farthest from the threshold first
    scores = [float(p) for p in re.findall(r'data-p="([0-9.]+)"', section)]
    assert scores == sorted(scores, reverse=(threshold == "0"))
    # listed before the rest of the page
    assert page.index("<div id=disagree>") < page.index("<div id=gallery>")
    assert page.index("<div id=disagree>") < page.index("<svg")


def test_report_says_when_nothing_disagrees(scanned: Path, tmp_path: Path) -> None:
    page_path = tmp_path / "r.html"
    assert main(["report", str(scanned), "--out", str(page_path)]) == 0
    page = page_path.read_text(encoding="utf-8")
    assert "<div id=disagree></div>" in page and "None: no file declared as AI" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's)")
def test_report_renders_its_gallery_in_headless_chromium(scanned: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(scanned), "--out", str(page)]) == 0
    cmd = [
        str(_chromium()),
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-ready="7"' in proc.stdout  # the page's script ran over the whole gallery
    assert "7 of 7 shown" in proc.stdout
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert "Refused to load" not in proc.stderr  # nothing blocked by the CSP: nothing external


def test_a_flagged_file_that_became_a_fifo_is_a_placeholder_not_a_hang(tmp_path: Path) -> None:
    """Issue 19: thumbnails open only regular files, without blocking; run in a child so
    that a regression fails on its timeout instead of hanging the suite."""
    import csv
    import os
    import subprocess
    import sys

    from aiscan.scanner.output.records import COLUMNS

    fifo = tmp_path / "flagged.jpg"
    os.mkfifo(fifo)
    verdicts = tmp_path / "v.csv"
    with verdicts.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(COLUMNS)
        w.writerow([str(fifo), "ok", "0.990000", "ai", "", "JPEG", "8", "8", "100", "", "m@1",
                    "none", "", "", "ai>=0.5 real<0.5 evidence=report", "false"])  # fmt: skip
    out = tmp_path / "r.html"
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", "report", str(verdicts), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "flagged.jpg" in out.read_text(encoding="utf-8")


def test_error_rows_have_their_own_section_and_stay_out_of_p_ai(
    bad_tree: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    """Issue 20: the error rows are listed with their reasons and counted by kind; a
    folder of error rows only has no mean p_ai (not 0.000)."""
    from aiscan.scanner.cli import main
    from aiscan.scanner.report import error_reason

    root = Path(next(iter(bad_tree))).parent
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "zero.jpg").write_bytes(b"")
    out = tmp_path / "v.csv"
    assert main([str(root), str(broken), "--out", str(out), "--model", str(tiny_model), "-q"]) == 1
    html = tmp_path / "r.html"
    assert main(["report", str(out), "--out", str(html)]) == 0
    page = html.read_text(encoding="utf-8")
    section = page[page.index("Files that could not be classified") :]
    for name, status in bad_tree.items():
        if status == "error":
            assert Path(name).name in section
    assert "Error rows by reason" in section and "zero.jpg" in section
    folders = page[
        page.index("<table id=folders>") : page.index("</table>", page.index("<table id=folders>"))
    ]
    row = folders[folders.index(str(broken)) :]
    assert row.split("</tr>")[0].count("<td class=n>-</td>") == 1  # its mean p_ai
    assert error_reason("truncated image data (image file is truncated (17 bytes))") == (
        "truncated image data"
    )


def test_the_uncertain_queue_and_both_edges(tmp_path: Path) -> None:
    """Issue 28: a moderator works the ai and the uncertain queues from the page; the
    histogram marks both edges, printed in canonical form; each thumbnail links to its
    file; a long path wraps at its separators."""
    import csv
    import json

    from aiscan.scanner.output.records import COLUMNS

    tree = tmp_path / ("a-rather-long-folder-name-" * 4)
    tree.mkdir()
    band = "ai>=0.815763 real<0.0798 evidence=report"
    rows = []
    for i, (p, v) in enumerate([(0.95, "ai"), (0.5, "uncertain"), (0.3, "uncertain"),
                                (0.01, "real")]):  # fmt: skip
        path = tree / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(photo(64, 48, seed=i)))
        rows.append([str(path), "ok", f"{p:.6f}", v, "", "JPEG", "64", "48", "100", "", "m@1",
                     "none", "", "", band, "false"])  # fmt: skip
    verdicts = tmp_path / "v.csv"
    with verdicts.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(COLUMNS)
        w.writerows(rows)
    summary = {"threshold": 0.8157630000000001, "real_below": 0.0798}
    (tmp_path / "v.csv.summary.json").write_text(json.dumps(summary))
    out = tmp_path / "r.html"
    assert main(["report", str(verdicts), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    queue = page.split("<div id=uncertain>")[1].split("</div>\n")[0]
    assert re.findall(r'data-p="([0-9.]+)"', queue) == ["0.500", "0.300"]  # highest first
    assert 'class="real-edge"' in page and "real below 0.0798" in page
    assert "ai at 0.815763" in page and "0.8157630000000001" not in page
    assert 'href="file://' in page and "/<wbr>" in page
