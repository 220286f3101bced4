"""Nightly incremental scans with a SQLite state: new, changed, re-judged, reused,
deleted; a lock; schema versions; crash at any point, rerun, nothing lost or doubled."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aiscan.scanner import state as state_mod
from aiscan.scanner.cli import EXIT_OK, EXIT_USAGE, main
from aiscan.scanner.output import read_rows
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
    assert _night(tree, db, tmp_path / "n3.csv", tiny_model, "--threshold", "0.9")["state"][
        "rejudged"
    ] == 5  # a new threshold is a new judgement too


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
    state_mod.ScanState(db, "m", 0.5).close()
    monkeypatch.setattr(
        state_mod,
        "MIGRATIONS",
        [*state_mod.MIGRATIONS, "ALTER TABLE files ADD COLUMN note TEXT;"],
    )
    monkeypatch.setattr(state_mod, "SCHEMA_VERSION", 2)
    state_mod.ScanState(db, "m", 0.5).close()  # migrates 1 -> 2, once
    state_mod.ScanState(db, "m", 0.5).close()
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(files)")]
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    con.close()
    assert cols.count("note") == 1 and version == "2"
    monkeypatch.setattr(state_mod, "SCHEMA_VERSION", 1)
    monkeypatch.setattr(state_mod, "MIGRATIONS", state_mod.MIGRATIONS[:1])
    with pytest.raises(state_mod.StateError, match="newer aiscan"):
        state_mod.ScanState(db, "m", 0.5)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(state_mod.StateError, match="not a usable"):
        state_mod.ScanState(junk, "m", 0.5)


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun(tiny_model: Path, tmp_path: Path) -> None:
    """Kill the nightly command at random moments, rerun it until it finishes: every file
    once in tonight's output, every file in the state, and the next night scans nothing."""
    tree, db, out = tmp_path / "store", tmp_path / "scans.db", tmp_path / "tonight.csv"
    files = _tree(tree, 2500)
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", str(tree), "--out", str(out)]
    cmd += ["--model", str(tiny_model), "--state", str(db), "--batch-size", "4", "-q"]
    rng = random.Random(5)
    kills = 0
    for _ in range(30):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.8, 2.5))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == EXIT_OK
        break
    else:
        pytest.fail("the nightly command never finished")
    assert kills >= 2, "the scan finished before it could be killed often enough"
    got = [r.path for r in read_rows(out)]
    assert len(got) == len(set(got)) == len(files)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM files").fetchone()[0] == len(files)
    con.close()
    out.unlink()
    again = _night(tree, db, tmp_path / "next.csv", tiny_model)
    assert again["state"]["unchanged"] == len(files) and again["files_this_run"] == 0
