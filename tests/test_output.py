from __future__ import annotations

import csv
from pathlib import Path

import pytest

from aiscan.scanner.core.rows import Row
from aiscan.scanner.output.formats import VerdictFileError, read_rows
from aiscan.scanner.output.records import COLUMNS
from aiscan.scanner.output.writer import OutputExistsError, VerdictWriter


def _rows(n: int, start: int = 0) -> list[Row]:
    return [
        Row(f"/p/{i}.jpg", "ok", 0.25, "real", "", "JPEG", 10, 20, 300, "", "m@1")
        for i in range(start, start + n)
    ]


def test_csv_header_is_stable() -> None:
    assert COLUMNS == (
        "path",
        "status",
        "p_ai",
        "verdict",
        "error",
        "format",
        "width",
        "height",
        "bytes",
        "sha256",
        "model",
        "evidence",
        "evidence_detail",
        "generator_hint",
        "path_escaped",
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_write_finish_read_round_trip(tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"v.{fmt}"
    w = VerdictWriter(out, fmt)
    rows = [
        *_rows(3),
        Row(
            '/p/bad,\n"name".jpg', "error", None, "", "truncated", "JPEG", None, None, 0, "", "m@1"
        ),
    ]
    w.write(rows)
    assert not out.exists() and w.journal.exists()  # only the finished file has the name
    w.finish()
    assert not w.journal.exists()
    assert read_rows(out) == rows


def test_existing_output_needs_resume_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "v.csv"
    VerdictWriter(out).finish()
    with pytest.raises(OutputExistsError, match="--resume"):
        VerdictWriter(out)
    VerdictWriter(out, overwrite=True).finish()


def test_resume_cuts_a_torn_last_record(tmp_path: Path) -> None:
    out = tmp_path / "v.csv"
    w = VerdictWriter(out)
    w.write(_rows(5))
    w.close()
    with w.journal.open("ab") as fh:
        fh.write(b'/p/torn.jpg,ok,0.5,"re')  # a crash in the middle of a record
    again = VerdictWriter(out, resume=True)
    assert again.recovered.paths == {f"/p/{i}.jpg" for i in range(5)}
    again.write(_rows(2, start=5))
    again.finish()
    paths = [r.path for r in read_rows(out)]
    assert paths == [f"/p/{i}.jpg" for i in range(7)]
    with out.open(newline="") as fh:
        assert all(len(rec) == len(COLUMNS) for rec in csv.reader(fh))


def test_resume_extends_a_finished_output(tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    w = VerdictWriter(out, "jsonl")
    w.write(_rows(2))
    w.finish()
    again = VerdictWriter(out, "jsonl", resume=True)
    assert again.recovered.statuses["ok"] == 2 and again.recovered.verdicts["real"] == 2
    again.write(_rows(1, start=2))
    again.finish()
    assert [r.path for r in read_rows(out)] == ["/p/0.jpg", "/p/1.jpg", "/p/2.jpg"]


def test_non_utf8_file_names_survive(tmp_path: Path) -> None:
    name = b"/p/caf\xe9.jpg".decode("utf-8", "surrogateescape")  # as os.scandir gives it
    out = tmp_path / "v.csv"
    w = VerdictWriter(out)
    w.write([Row(name, "ok", 0.5, "ai", "", "JPEG", 1, 1, 1, "", "m")])
    w.close()
    assert VerdictWriter(out, resume=True).recovered.paths == {name}


def test_resume_refuses_foreign_files_and_other_formats(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(VerdictFileError, match="not an aiscan verdict file"):
        VerdictWriter(foreign, resume=True)
    out = tmp_path / "v.out"
    w = VerdictWriter(out)
    w.write(_rows(1))
    w.finish()
    with pytest.raises(VerdictFileError, match="--format csv"):
        VerdictWriter(out, "jsonl", resume=True)
    assert [r.path for r in read_rows(out)] == ["/p/0.jpg"]  # untouched


# Names that are not UTF-8: Latin-1 e-acute, a lone continuation byte, and a backslash
# (which the escaped form doubles) beside an escaped byte.
_ODD_NAMES = [b"caf\xe9.jpg", b"x\x80y.png", b"back\\slash\xff.jpg", "ok-été.jpg".encode()]


def test_escape_path_round_trips_every_byte() -> None:
    import os

    from aiscan.scanner.output.records import escape_path, unescape_path

    for raw in [*_ODD_NAMES, bytes(range(1, 256)).replace(b"/", b"")]:
        name = os.fsdecode(raw)
        text, escaped = escape_path(name)
        text.encode("utf-8")  # always valid UTF-8
        assert os.fsencode(unescape_path(text, escaped)) == raw
    assert escape_path("plain\\é.jpg") == ("plain\\é.jpg", False)  # UTF-8 names unchanged


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_non_utf8_file_names_give_valid_utf8_output_in_every_format(
    tmp_path: Path, fmt: str, tiny_model: Path
) -> None:
    """Read back by csv, json, pandas and pyarrow with strict UTF-8; original bytes kept."""
    import json
    import os

    from aiscan.scanner.cli import main
    from tests.conftest import jpeg_bytes, photo

    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    tree = os.fsencode(tmp_path / "photos")
    os.mkdir(tree)
    for raw in _ODD_NAMES:
        with open(os.path.join(tree, raw), "wb") as fh:
            fh.write(jpeg_bytes(photo(48, 48)))
    with open(os.path.join(tree, b"bad\xfe.txt"), "wb") as fh:  # a skipped row, too
        fh.write(b"not an image")
    out = tmp_path / f"v.{fmt}"
    args = [os.fsdecode(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main([*args, "--format", fmt]) == 0
    names = {os.path.basename(raw) for raw in [*_ODD_NAMES, b"bad\xfe.txt"]}
    if fmt == "csv":
        with out.open(encoding="utf-8", newline="") as fh:  # strict: fails on any bad byte
            records = list(csv.DictReader(fh))
    elif fmt == "jsonl":
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    else:
        import pyarrow.parquet as pq

        records = pq.read_table(out).to_pylist()
    rows = read_rows(out)
    assert {os.path.basename(os.fsencode(r.path)) for r in rows} == names
    escaped = {r["path"] for r in records if r["path_escaped"] in (True, "true")}
    assert len(escaped) == 4  # three odd image names and the odd text file
    assert any(p.endswith("caf\\xe9.jpg") for p in escaped)
    pandas = pytest.importorskip("pandas")
    if fmt == "csv":
        frame = pandas.read_csv(out, encoding="utf-8")
    elif fmt == "jsonl":
        frame = pandas.read_json(out, lines=True, encoding="utf-8")
    else:
        frame = pandas.read_parquet(out)
    assert len(frame) == len(names)
    # resume finds every file already written: nothing is doubled
    assert main([*args, "--format", fmt, "--resume"]) == 0
    assert len(read_rows(out)) == len(names)
