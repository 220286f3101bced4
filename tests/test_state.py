"""Nightly incremental scans with a SQLite state: new, changed, re-judged, reused,
deleted; a lock; schema versions; crash at any point, rerun, nothing lost or doubled."""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiscan.scanner.cli import main
from aiscan.scanner.cli.common import EXIT_OK, EXIT_USAGE
from aiscan.scanner.nightly import state as state_mod
from aiscan.scanner.output.formats import read_rows
from tests.conftest import _tiny, jpeg_bytes, photo


def _tree(root: Path, n: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        f = root / f"d{i % 3}" / f"{i:04d}.jpg"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(jpeg_bytes(photo(64, 48, seed=i)))
        files.append(f)
    return files


def _night(tree: Path, db: Path, out: Path, model: Path, *extra: str) -> dict:
    args = [str(tree), "--out", str(out), "--model", str(model), "--state", str(db), "-q"]
    assert main([*args, *extra]) == EXIT_OK
    return json.loads(out.with_name(out.name + ".summary.json").read_text())


def test_second_night_scans_only_what_changed(tiny_model: Path, tmp_path: Path) -> None:
    tree, db = tmp_path / "store", tmp_path / "scans.db"
    files = _tree(tree, 12)
    first = _night(tree, db, tmp_path / "n1.csv", tiny_model, "--sha256")
    assert first["state"]["new"] == 12 and len(read_rows(tmp_path / "n1.csv")) == 12
    second = _night(tree, db, tmp_path / "n2.csv", tiny_model, "--sha256")
    assert second["state"]["unchanged"] == 12 and second["files_this_run"] == 0
    assert read_rows(tmp_path / "n2.csv") == []
    files[0].write_bytes(jpeg_bytes(photo(64, 48, seed=99)))  # changed content
    files[1].unlink()  # deleted
    (tree / "copy.jpg").write_bytes(files[2].read_bytes())  # identical content, new name
    (tree / "new.jpg").write_bytes(jpeg_bytes(photo(70, 50, seed=7)))
    third = _night(tree, db, tmp_path / "n3.csv", tiny_model, "--sha256")["state"]
    assert (third["new"], third["changed"], third["unchanged"]) == (2, 1, 10)
    assert third["reused"] == 1 and third["deleted"] == 1
    assert third["deleted_sample"] == [str(files[1])]
    rows = {Path(r.path).name: r for r in read_rows(tmp_path / "n3.csv")}
    assert set(rows) == {files[0].name, "copy.jpg", "new.jpg"}
    original = {Path(r.path).name: r for r in read_rows(tmp_path / "n1.csv")}[files[2].name]
    assert rows["copy.jpg"].p_ai == original.p_ai  # reused, not decoded again
    assert (rows["copy.jpg"].width, rows["copy.jpg"].height) == (64, 48)
    export = tmp_path / "all.parquet"
    assert main(["export-state", str(db), "--out", str(export)]) == EXIT_OK
    current = {Path(r.path).name for r in read_rows(export)}
    assert len(current) == 13 and files[1].name not in current and "copy.jpg" in current


def test_another_model_rejudges_everything(
    tiny_model: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tree, db = tmp_path / "store", tmp_path / "scans.db"
    _tree(tree, 5)
    _night(tree, db, tmp_path / "n1.csv", tiny_model)
    other = _tiny(tmp_path_factory.mktemp("other"), "crop")  # another file, another hash
    state = _night(tree, db, tmp_path / "n2.csv", other)["state"]
    assert state["rejudged"] == 5 and len(read_rows(tmp_path / "n2.csv")) == 5
    assert (
        _night(tree, db, tmp_path / "n3.csv", tiny_model, "--threshold", "0.9")["state"]["rejudged"]
        == 5
    )  # a new threshold is a new judgement too


def test_a_second_run_on_one_state_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    tree, db = tmp_path / "store", tmp_path / "scans.db"
    _tree(tree, 2)
    live = state_mod.ScanState(db, "x", 0.5)
    args = [str(tree), "--out", str(tmp_path / "n.csv"), "--model", str(tiny_model)]
    assert main([*args, "--state", str(db), "-q"]) == EXIT_USAGE
    live.close()
    assert main([*args, "--state", str(db), "-q"]) == EXIT_OK


def test_schema_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.db"
    now = state_mod.SCHEMA_VERSION
    first = sqlite3.connect(db)  # a database as the first schema version left it
    first.executescript(state_mod.MIGRATIONS[0])
    first.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    first.commit()
    first.close()
    state_mod.ScanState(db, "m", 0.5).close()  # migrated up to today's version
    monkeypatch.setattr(
        state_mod,
        "MIGRATIONS",
        [*state_mod.MIGRATIONS, "ALTER TABLE files ADD COLUMN note TEXT;"],
    )
    monkeypatch.setattr(state_mod, "SCHEMA_VERSION", now + 1)
    state_mod.ScanState(db, "m", 0.5).close()  # one step more, once
    state_mod.ScanState(db, "m", 0.5).close()
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(files)")]
    run_cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    con.close()
    assert cols.count("note") == 1 and "stats" in run_cols and version == str(now + 1)
    monkeypatch.setattr(state_mod, "SCHEMA_VERSION", now)
    monkeypatch.setattr(state_mod, "MIGRATIONS", state_mod.MIGRATIONS[:now])
    with pytest.raises(state_mod.StateError, match="newer aiscan"):
        state_mod.ScanState(db, "m", 0.5)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(state_mod.StateError, match="not a usable"):
        state_mod.ScanState(junk, "m", 0.5)


def _rows_in(db: Path) -> int:
    """Files the state database holds now, read beside a live writer (WAL: no lock taken)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM files").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:  # the schema is not written yet
        return 0


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun(tiny_model: Path, tmp_path: Path) -> None:
    """Kill the nightly command at random points of its progress, rerun it until it
    finishes: every file once in tonight's output, every file in the state, and the next
    night scans nothing. The kill points follow the state's row count, not the clock, so a
    fast machine is killed as often as a slow one."""
    tree, db, out = tmp_path / "store", tmp_path / "scans.db", tmp_path / "tonight.csv"
    files = _tree(tree, 2000)
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", str(tree), "--out", str(out)]
    cmd += ["--model", str(tiny_model), "--state", str(db), "--batch-size", "4", "-q"]
    rng = random.Random(5)
    kills = 0
    while kills < 4:
        target = _rows_in(db) + rng.randint(20, 150)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and _rows_in(db) < target:
            assert time.monotonic() < deadline, "the nightly command made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))  # land anywhere in a batch, not just after a commit
        if proc.poll() is not None:
            pytest.fail(f"the scan ended (exit {proc.returncode}) before kill {kills + 1}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=600).returncode == EXIT_OK
    got = [r.path for r in read_rows(out)]
    assert len(got) == len(set(got)) == len(files)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM files").fetchone()[0] == len(files)
    con.close()
    out.unlink()
    again = _night(tree, db, tmp_path / "next.csv", tiny_model)
    assert again["state"]["unchanged"] == len(files) and again["files_this_run"] == 0


def test_shards_merge_and_add_up(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "store"
    files = _tree(tree, 30)
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.csv"
        args = [str(tree), "--out", str(part), "--model", str(tiny_model), "-q"]
        assert main([*args, "--shard", f"{i}/3"]) == EXIT_OK
        parts.append(str(part))
    out = tmp_path / "all.parquet"
    assert main(["merge", *parts, "--out", str(out), "--tree", str(tree)]) == EXIT_OK
    assert sorted(r.path for r in read_rows(out)) == sorted(str(f) for f in files)
    # a missing shard and a doubled part are named, and the exit status says so
    two = tmp_path / "two.csv"
    assert main(["merge", *parts[:2], "--out", str(two), "--tree", str(tree)]) == 1
    assert main(["merge", parts[0], parts[0], "--out", str(tmp_path / "x.csv")]) == EXIT_USAGE
    (tree / "late.jpg").write_bytes(jpeg_bytes(photo(40, 40)))  # appeared after the scans
    assert main(["merge", *parts, "--out", str(tmp_path / "y.csv"), "--tree", str(tree)]) == 1


def test_merge_names_what_is_missing(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tree = tmp_path / "store"
    _tree(tree, 6)
    part = tmp_path / "p0.csv"
    assert (
        main([str(tree), "--out", str(part), "--model", str(tiny_model), "-q", "--shard", "0/2"])
        == 0
    )
    capsys.readouterr()
    assert main(["merge", str(part), "--out", str(tmp_path / "m.csv"), "--tree", str(tree)]) == 1
    err = capsys.readouterr().err
    assert "missing shards: 1: 1" in err and "files of the tree without a row" in err


def test_drift_against_the_previous_night() -> None:
    from aiscan.scanner.core.rows import Row

    def night(ai: int, real: int, errors: int = 0) -> state_mod.NightFigures:
        f = state_mod.NightFigures()
        rows = [
            Row(
                path=f"/a{i}",
                status="ok",
                p_ai=0.9,
                verdict="ai",
                error="",
                format="JPEG",
                width=1,
                height=1,
                bytes=1,
                sha256="",
                model="m",
            )
            for i in range(ai)
        ]
        rows += [
            Row(
                path=f"/r{i}",
                status="ok",
                p_ai=0.1,
                verdict="real",
                error="",
                format="JPEG",
                width=1,
                height=1,
                bytes=1,
                sha256="",
                model="m",
            )
            for i in range(real)
        ]
        rows += [
            Row(
                path=f"/e{i}",
                status="error",
                p_ai=None,
                verdict="",
                error="bad",
                format="",
                width=None,
                height=None,
                bytes=1,
                sha256="",
                model="m",
            )
            for i in range(errors)
        ]
        f.add(rows)
        return f

    calm = state_mod.drift(night(20, 180), night(22, 178))
    assert calm["assessed"] and calm["flagged"] == []
    moved = state_mod.drift(night(120, 80, errors=30), night(20, 180))
    assert set(moved["flagged"]) == {"ai_rate", "error_rate", "histogram_tv"}
    assert moved["deltas"]["ai_rate"] == pytest.approx(0.5)
    assert not state_mod.drift(night(5, 5), night(20, 180))["assessed"]  # too few files


def test_metrics_file_and_json_log_lines(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tree, db = tmp_path / "store", tmp_path / "scans.db"
    _tree(tree, 4)
    (tree / "bad.jpg").write_bytes(b"not an image")
    prom = tmp_path / "aiscan.prom"
    args = [str(tree), "--out", str(tmp_path / "n.csv"), "--model", str(tiny_model)]
    args += ["--state", str(db), "--metrics-file", str(prom), "--log-json"]
    assert main(args) == 1
    lines = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["exit_status"] == 1
    assert summary["statuses"] == {"ok": 4, "skipped": 0, "error": 1}
    text = prom.read_text()
    assert 'aiscan_files{status="error",model="tiny-test"} 1' in text
    assert 'aiscan_state_files{kind="new",model="tiny-test"} 5' in text
    assert 'aiscan_exit_status{model="tiny-test"} 1' in text
    for line in text.splitlines():  # the exposition format: comments or name{labels} value
        assert line.startswith("# ") or re.fullmatch(r"aiscan_\w+\{[^}]*\} [-0-9.e+]+", line)


def test_closing_the_state_while_a_late_walk_still_asks_it(tmp_path: Path) -> None:
    """The walk asks the state from its own thread, and a walk stopped late may still ask
    after the scan closed the database (closing under a running query once crashed the
    process: SIGSEGV in CI). Close waits for a running query; a question after close gets
    an answer (scan it), not an exception. Events, not sleeps, order the two threads:
    queries have run before the close, and run again after it."""
    import threading

    from aiscan.scanner.core.discovery import Found

    files = _tree(tmp_path / "store", 20)
    state = state_mod.ScanState(tmp_path / "scans.db", "m", 0.5)
    state.begin([str(tmp_path / "store")])
    errors: list[BaseException] = []
    asked, closed, asked_after = threading.Event(), threading.Event(), threading.Event()
    answers_after: list[bool] = []

    def walk() -> None:
        try:
            while not asked_after.is_set():
                for f in files:
                    answer = state.needs_scan(Found(str(f)))
                    asked.set()
                    if closed.is_set():
                        answers_after.append(answer)
                        asked_after.set()
        except BaseException as exc:  # handed to the test
            errors.append(exc)
            asked.set()
            asked_after.set()

    reader = threading.Thread(target=walk)
    reader.start()
    assert asked.wait(10)
    state.close()
    closed.set()
    assert asked_after.wait(10)
    reader.join(10)
    assert not errors and not reader.is_alive()
    assert answers_after and all(answers_after)  # after close: always "scan it"


def _tonight(tree: Path, out: Path, model: Path, db: Path) -> list[str]:
    return [str(tree), "--out", str(out), "--model", str(model), "--state", str(db), "-q"]


def test_a_damaged_state_is_exit_2_naming_the_check_and_the_backup(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree, db = tmp_path / "store", tmp_path / "scans.db"
    _tree(tree, 40)
    assert main(_tonight(tree, tmp_path / "n1.csv", tiny_model, db)) == EXIT_OK
    with db.open("r+b") as fh:  # every page after the first: garbage
        size = fh.seek(0, 2)
        fh.seek(4096)
        fh.write(b"\xde\xad" * ((size - 4096) // 2))
    capsys.readouterr()
    assert main(_tonight(tree, tmp_path / "n2.csv", tiny_model, db)) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PRAGMA integrity_check" in err[0] and "backup" in err[0], err


def test_a_state_the_disk_cannot_take_is_exit_3_and_keeps_the_rows(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while tonight's rows go into the state: one line, exit 3 (not 1,
    which a scheduler reads as a night with bad files), and the rows already written to
    the output's journal stay for the rerun."""
    tree, db, out = tmp_path / "store", tmp_path / "scans.db", tmp_path / "n.csv"
    _tree(tree, 30)
    real = state_mod.ScanState.record.__wrapped__  # type: ignore[attr-defined]
    calls = []

    def filling(self, rows):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, rows)

    monkeypatch.setattr(state_mod.ScanState, "record", state_mod._guarded(filling))
    assert main([*_tonight(tree, out, tiny_model, db), "--batch-size", "4"]) == 3
    kept = read_rows(out.with_name(out.name + ".partial"))
    assert len(kept) >= 4  # the first batches' rows, in the journal


def test_a_read_only_state_is_exit_3(tiny_model: Path, tmp_path: Path) -> None:
    from tests.conftest import run_obeying_file_modes

    tree, db = tmp_path / "store", tmp_path / "scans.db"
    _tree(tree, 5)
    assert main(_tonight(tree, tmp_path / "n1.csv", tiny_model, db)) == EXIT_OK
    db.chmod(0o444)
    cmd = [
        sys.executable,
        "-m",
        "aiscan.scanner.cli",
        *_tonight(tree, tmp_path / "n2.csv", tiny_model, db),
    ]
    proc = run_obeying_file_modes(cmd)
    db.chmod(0o644)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be written" in lines[0], lines
