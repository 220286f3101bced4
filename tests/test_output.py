from __future__ import annotations

import csv
from pathlib import Path

import pytest

from aiscan.scanner.output import (
    COLUMNS,
    OutputExistsError,
    Row,
    VerdictFileError,
    VerdictWriter,
    read_rows,
)


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
