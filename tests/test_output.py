from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from aiscan.scanner.core.rows import Row
from aiscan.scanner.output.formats import VerdictFileError, read_rows
from aiscan.scanner.output.records import COLUMNS
from aiscan.scanner.output.writer import OutputExistsError, VerdictWriter
from tests.conftest import jpeg_bytes, photo


def _rows(n: int, start: int = 0) -> list[Row]:
    return [
        Row(
            path=f"/p/{i}.jpg",
            status="ok",
            p_ai=0.25,
            verdict="real",
            error="",
            format="JPEG",
            width=10,
            height=20,
            bytes=300,
            sha256="",
            model="m@1",
        )
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
        "band",
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
            path='/p/bad,\n"name".jpg',
            status="error",
            p_ai=None,
            verdict="",
            error="truncated",
            format="JPEG",
            width=None,
            height=None,
            bytes=0,
            sha256="",
            model="m@1",
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
    w.write(
        [
            Row(
                path=name,
                status="ok",
                p_ai=0.5,
                verdict="ai",
                error="",
                format="JPEG",
                width=1,
                height=1,
                bytes=1,
                sha256="",
                model="m",
            )
        ]
    )
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


@pytest.mark.parametrize(
    ("out", "fmt", "expect"),
    [
        ("v.csv", None, "csv"),
        ("v.jsonl", None, "jsonl"),
        ("V.PARQUET", None, "parquet"),
        ("v.out", "jsonl", "jsonl"),
        ("v.csv", "csv", "csv"),
        ("v.parquet", "jsonl", "names parquet but --format is jsonl"),
        ("v.txt", None, "the suffix .txt names no format"),
        ("verdicts", None, "the suffix (none) names no format"),
        ("v.csv", "xml", "--format must be one of"),
    ],
)
def test_one_format_rule_for_every_writer(out: str, fmt: str | None, expect: str) -> None:
    from aiscan.scanner.core.errors import ConfigError
    from aiscan.scanner.output.formats import resolve_format

    if expect in ("csv", "jsonl", "parquet"):
        assert resolve_format(out, fmt) == expect
    else:
        with pytest.raises(ConfigError, match=re.escape(expect)):
            resolve_format(out, fmt)


def test_scan_merge_and_export_state_follow_the_suffix(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiscan.scanner.cli import main
    from aiscan.scanner.output.formats import detect_format

    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(32, 32)))
    base = [str(tree), "--model", str(tiny_model), "-q"]
    assert main([*base, "--out", str(tmp_path / "v.jsonl")]) == 0
    assert detect_format(tmp_path / "v.jsonl") == "jsonl"
    assert main([*base, "--out", str(tmp_path / "v.txt")]) == 2
    assert main([*base, "--out", str(tmp_path / "w.csv"), "--format", "jsonl"]) == 2
    assert "names no format" in capsys.readouterr().err
    assert not list(tmp_path.glob("v.txt*")) and not list(tmp_path.glob("w.csv*"))
    assert main([*base, "--out", str(tmp_path / "s.csv"), "--state", str(tmp_path / "s.db")]) == 0
    assert main(["export-state", str(tmp_path / "s.db"), "--out", str(tmp_path / "e.jsonl")]) == 0
    assert detect_format(tmp_path / "e.jsonl") == "jsonl"
    assert main(["export-state", str(tmp_path / "s.db"), "--out", str(tmp_path / "e.dat")]) == 2
    assert main(["merge", str(tmp_path / "v.jsonl"), "--out", str(tmp_path / "m.txt")]) == 2
    assert not list(tmp_path.glob("m.txt*")) and not list(tmp_path.glob("e.dat*"))


def test_every_store_takes_its_columns_from_the_row_schema(tmp_path: Path) -> None:
    """The schema table (Row's fields) against what each store really holds: the Parquet
        file's Arrow schema and the state database's files table (the Ray engine carries rows
    as objects, with no codec of its own)."""
    import sqlite3

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from aiscan.scanner.core.rows import ROW_FIELDS, ROW_SCHEMA, Row
    from aiscan.scanner.nightly.state import ScanState, current_rows
    from aiscan.scanner.output.writer import VerdictWriter

    rows = [
        Row(
            path="/x/a.jpg",
            status="ok",
            p_ai=0.25,
            verdict="real",
            error="",
            format="JPEG",
            width=4,
            height=3,
            bytes=100,
            sha256="ab" * 32,
            model="m@1",
        ),
        Row(
            path="/x/b.png",
            status="error",
            p_ai=None,
            verdict="",
            error="truncated",
            format="PNG",
            width=None,
            height=None,
            bytes=None,
            sha256="",
            model="m@1",
        ),
    ]
    out = tmp_path / "v.parquet"
    writer = VerdictWriter(out, "parquet")
    writer.write(rows)
    writer.finish()
    arrow = pq.read_schema(out)
    for c in ROW_SCHEMA:
        assert arrow.field(c.name).type == getattr(pa, c.arrow)(), c.name
    state = ScanState(tmp_path / "s.db", "m", 0.5)
    state.begin(["/x"])
    state.record(rows)
    state.close()
    con = sqlite3.connect(tmp_path / "s.db")
    declared = {name: kind for _, name, kind, *_ in con.execute("PRAGMA table_info(files)")}
    con.close()
    for c in ROW_SCHEMA:
        assert declared[c.name] == c.sqlite, c.name
    state_own = {"size", "mtime_ns", "model_sha256", "threshold", "scanned_run", "seen_run",
                 "deleted_run", "real_below"}  # fmt: skip
    assert set(declared) == set(ROW_FIELDS) | state_own  # no column beside the schema's
    assert list(current_rows(tmp_path / "s.db")) == rows


def _csv_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(COLUMNS)
        w.writerows(rows)


def _good(path: str = "/x/a.jpg") -> list[str]:
    head = [path, "ok", "0.250000", "real", "", "JPEG", "4", "3", "100", "", "m@1"]
    return [*head, "none", "", "", "ai>=0.5 real<0.5 evidence=report", "false"]


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("status", "zzz", "column 'status': 'zzz' is none of"),
        ("p_ai", "-3", "column 'p_ai': -3.0 is not within [0, 1]"),
        ("p_ai", "inf", "column 'p_ai': 'inf' is not finite"),
        ("p_ai", "1e308", "column 'p_ai': 1e+308 is not within [0, 1]"),
        ("width", "-1", "column 'width': -1 is negative"),
        ("bytes", "lots", "column 'bytes': 'lots' is not a number"),
        ("verdict", "maybe", "column 'verdict': 'maybe' is none of"),
        ("verdict", "", "columns 'status', 'p_ai', 'verdict' disagree"),
    ],
)
def test_a_nonsense_row_is_refused_by_every_reader_naming_row_and_column(
    tmp_path: Path, column: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 19: recovered and read rows are held to what the writer writes; every reader
    (the report, merge, export) and resume say which row and column, in one line, never
    a traceback."""
    from aiscan.scanner.cli import main

    bad = _good("/x/b.jpg")
    bad[COLUMNS.index(column)] = value
    path = tmp_path / "v.csv"
    _csv_rows(path, [_good(), bad])
    with pytest.raises(VerdictFileError, match=re.escape(f"row 2: {says}")):
        read_rows(path)
    assert main(["report", str(path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "r.html").exists()
    journal = tmp_path / "j.csv.partial"
    _csv_rows(journal, [_good(), bad])
    with pytest.raises(VerdictFileError, match=re.escape(f"record 2 is not a verdict row ({says}")):
        VerdictWriter(tmp_path / "j.csv", "csv", resume=True)
    assert journal.read_bytes().count(b"\r\n") == 3  # nothing cut, nothing lost


def test_resume_refuses_rows_of_another_model_unless_asked(
    tiny_model: Path, tiny_crop_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiscan.scanner.cli import main

    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(32, 32)))
    out = tmp_path / "v.csv"
    assert main([str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]) == 0
    before = out.read_bytes()
    (tree / "b.jpg").write_bytes(jpeg_bytes(photo(40, 32, seed=1)))
    other = [str(tree), "--out", str(out), "--model", str(tiny_crop_model), "--resume", "-q"]
    assert main(other) == 2
    assert "--mix-models" in capsys.readouterr().err
    assert out.read_bytes() == before and not list(tmp_path.glob("v.csv.partial*"))
    again = [str(tree), "--out", str(out), "--model", str(tiny_model), "--resume", "-q"]
    assert main([*again, "--threshold", "0.9"]) == 2  # same model, another threshold
    assert main([*other, "--mix-models"]) == 0
    assert {r.model.split("@")[0] for r in read_rows(out)} == {"tiny-test", "tiny-test-crop"}


def test_an_output_that_is_one_of_the_inputs_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.scanner.cli import main

    tree = tmp_path / "t"
    tree.mkdir()
    image = tree / "a.jpg"
    image.write_bytes(jpeg_bytes(photo(32, 32)))
    original = image.read_bytes()
    (tree / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)  # an image by its bytes
    for out, flag in ((image, "--overwrite"), (image, "--resume"), (tree / "b.png", "--resume")):
        args = [str(tree), "--out", str(out), "--model", str(tiny_model), flag, "-q"]
        assert main(args) == 2
    assert main([str(image), "--out", str(image), "--model", str(tiny_model), "-q"]) == 2
    assert image.read_bytes() == original
    assert sorted(p.name for p in tree.iterdir()) == ["a.jpg", "b.png"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_largest_row_the_writer_writes_reads_back_everywhere(tmp_path: Path, fmt: str) -> None:
    """Issue 19: free text at the cap (and beyond it, cut), a 4,096-byte undecodable path:
    every reader (read_rows, report, merge) takes what the writer writes."""
    from aiscan.scanner.cli import main
    from aiscan.scanner.output.records import TEXT_CELL_MAX

    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    name = "/x/" + "\udcff" * 1000 + "a" * 3000  # 4,004 bytes as the file system has it
    huge = "e" * 300_000
    rows = [
        Row(
            path=name,
            status="error",
            p_ai=None,
            verdict="",
            error=huge,
            format="PNG",
            width=None,
            height=None,
            bytes=None,
            sha256="",
            model="m@1",
            evidence="none",
            evidence_detail=huge,
            generator_hint=huge,
        ),
        Row(
            path="/x/b.jpg",
            status="ok",
            p_ai=0.5,
            verdict="ai",
            error="",
            format="JPEG",
            width=1,
            height=1,
            bytes=1,
            sha256="",
            model="m@1",
        ),
    ]
    out = tmp_path / f"v.{fmt}"
    writer = VerdictWriter(out, fmt)
    writer.write(rows)
    writer.finish()
    back = read_rows(out)
    assert back[0].path == name and back[1] == rows[1]
    for text in (back[0].error, back[0].evidence_detail, back[0].generator_hint):
        assert len(text) == TEXT_CELL_MAX and text.endswith("[cut: 300000 characters]")
    summary = {"config": {"shard": "0/1"}, "threshold": 0.5}
    (tmp_path / f"v.{fmt}.summary.json").write_text(json.dumps(summary))
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert main(["merge", str(out), "--out", str(tmp_path / f"m.{fmt}")]) == 0
    assert read_rows(tmp_path / f"m.{fmt}") == back
