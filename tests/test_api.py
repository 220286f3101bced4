"""The Python API: a list of files or of in-memory images in, one typed row each out, in
order, with the scanner's own error contract and full-precision p_ai."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aiscan.scanner.api import Detector
from aiscan.scanner.cli import main
from aiscan.scanner.cli.common import EXIT_FILE_ERRORS
from aiscan.scanner.core.errors import ConfigError
from aiscan.scanner.output.formats import read_rows


def test_files_give_one_row_each_in_order_like_the_scan(
    tiny_model: Path, bad_tree: dict[str, str], tmp_path: Path
) -> None:
    paths = sorted(bad_tree)
    missing = str(tmp_path / "gone.jpg")
    folder = str(Path(paths[0]).parent / "sub")
    detector = Detector(tiny_model, device="cpu", batch_size=3, workers=2)
    rows = list(detector.classify_files([*paths, missing, folder, paths[0]]))
    assert [r.path for r in rows] == [*paths, missing, folder, paths[0]]
    assert [r.status for r in rows[: len(paths)]] == [bad_tree[p] for p in paths]
    assert (rows[-3].status, rows[-2].status) == ("error", "error")
    assert "disappeared" in rows[-3].error and "directory" in rows[-2].error
    assert rows[-1].p_ai == rows[0].p_ai  # the same file twice: two rows, one verdict
    # the same files through the command line: the same verdicts (the CSV keeps 6 digits)
    out = tmp_path / "v.csv"
    cli = [str(Path(paths[0]).parent), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main(cli) == EXIT_FILE_ERRORS  # the tree's broken files
    scanned = {r.path: r for r in read_rows(out)}
    for row in rows[: len(paths)]:
        assert row.status == scanned[row.path].status
        if row.status == "ok":
            assert row.p_ai is not None and not math.isclose(row.p_ai, round(row.p_ai, 6))
            assert row.p_ai == pytest.approx(scanned[row.path].p_ai, abs=1e-6)
            assert row.verdict == scanned[row.path].verdict


def test_bytes_in_memory_are_judged_as_the_same_files(
    tiny_model: Path, bad_tree: dict[str, str]
) -> None:
    paths = sorted(bad_tree)
    detector = Detector(tiny_model, device="cpu", threshold=0.0)
    from_files = list(detector.classify_files(paths))
    uploads = [(f"upload-{i}{Path(p).suffix}", Path(p).read_bytes()) for i, p in enumerate(paths)]
    uploads.append(("../../etc/passwd\n;rm -rf .jpg", b"\xff\xd8\xff broken"))
    rows = list(detector.classify_bytes(uploads))
    assert [r.path for r in rows] == [name for name, _ in uploads]
    for f, b in zip(from_files, rows, strict=False):
        assert (b.status, b.p_ai, b.bytes, b.format) == (f.status, f.p_ai, f.bytes, f.format)
        assert b.verdict == ("ai" if b.status == "ok" else "")  # threshold 0: all ok are ai
    assert rows[-1].status == "error" and rows[-1].p_ai is None


def test_a_bad_threshold_is_refused_before_any_image(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        Detector(tiny_model, device="cpu", threshold=1.5)


def test_a_tree_in_memory_gives_the_scans_rows(
    tiny_model: Path, bad_tree: dict[str, str], tmp_path: Path
) -> None:
    root = Path(next(iter(bad_tree))).parent
    rows = list(Detector(tiny_model, device="cpu").classify_tree([root, root / "a_good.jpg"]))
    assert {r.path: r.status for r in rows} == bad_tree  # each file once
    out = tmp_path / "v.csv"
    assert (
        main([str(root), "--out", str(out), "--model", str(tiny_model), "-q"]) == EXIT_FILE_ERRORS
    )
    assert [r.path for r in rows] == [r.path for r in read_rows(out)]


def test_iter_verdicts_gives_the_rows_that_scan_writes_walking_the_tree_once(
    tiny_model: Path, bad_tree: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiscan.scanner.run import pipeline
    from aiscan.scanner.run.config import ScanConfig
    from aiscan.scanner.run.pipeline import Verdicts, iter_verdicts, scan

    walks = []
    real = pipeline.discover

    def counted(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        walks.append(args)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "discover", counted)
    root = str(Path(sorted(bad_tree)[0]).parent)
    config = ScanConfig(paths=(root,), model=tiny_model, device="cpu", batch_size=2)
    rows = list(iter_verdicts(config))
    assert len(walks) == 1
    assert sorted(r.path for r in rows) == sorted(bad_tree)  # each file once, no output
    assert {r.path: r.status for r in rows} == bad_tree
    out = tmp_path / "v.csv"
    state = tmp_path / "state.db"
    walks.clear()
    summary = scan(ScanConfig(paths=(root,), out=out, model=tiny_model, device="cpu", state=state))
    assert len(walks) == 1  # the progress total comes from the same walk
    assert [r.path for r in read_rows(out)] == [r.path for r in rows]
    for got, written in zip(rows, read_rows(out), strict=True):
        assert (got.status, got.verdict) == (written.status, written.verdict)
        assert got.p_ai == pytest.approx(written.p_ai, abs=1e-6)
    assert summary.files_this_run == len(rows)
    verdicts = Verdicts(config)
    list(verdicts)
    assert verdicts.progress.total == verdicts.progress.found == verdicts.progress.done == len(rows)
    with pytest.raises(ConfigError, match="give --out"):
        scan(config)


def test_the_walk_runs_ahead_within_its_bound_and_hands_over_its_errors() -> None:
    import threading

    from aiscan.scanner.core.discovery import Found
    from aiscan.scanner.run.walk import Walk

    gate = threading.Event()

    def files(n: int, fail: bool = False):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield Found(f"/f{i}")
        gate.set()
        if fail:
            raise OSError("the state database went away")

    walk = Walk(files(50), ahead=4)
    walk.start()
    walk.join(0.5)
    assert walk.is_alive() and walk.found <= 5 and walk.total is None  # bounded: waits
    assert [f.path for f in walk] == [f"/f{i}" for i in range(50)]
    assert walk.total == walk.found == 50
    failing = Walk(files(3, fail=True))
    failing.start()
    with pytest.raises(OSError, match="went away"):
        list(failing)
    stuck = Walk(files(50), ahead=2)
    stuck.start()
    stuck.stop()  # nobody reads: the walk still ends
    assert not stuck.is_alive()
