"""Nothing mixed silently (issue 32, classes 1 and 5): every row records what judged it
(model, edges, evidence policy), every place that combines rows compares that, and the
verdict band is validated as a whole, its edges in one canonical form."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiscan.model.meta import ModelInfo, band_label, canonical_edge, read_info, write_info
from aiscan.scanner.cli import main
from aiscan.scanner.core.rows import judge_difference
from aiscan.scanner.output.formats import read_rows
from aiscan.scanner.output.sidecars import sidecars
from tests.conftest import jpeg_bytes, photo


def _tree(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i}.jpg").write_bytes(jpeg_bytes(photo(40 + i, 32, seed=i)))
    return root


def _banded(tiny_model: Path, folder: Path, threshold: float, real_below: float) -> Path:
    """The tiny model with a band of its own (as the default model has)."""
    path = folder / "banded.onnx"
    path.write_bytes(tiny_model.read_bytes())
    info = read_info(path)
    write_info(
        path, ModelInfo(**{**info.__dict__, "threshold": threshold, "real_below": real_below})
    )
    return path


def test_rows_record_their_judge(tiny_model: Path, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "t")
    out = tmp_path / "v.csv"
    args = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main([*args, "--threshold", "0.52", "--real-below", "0.48"]) == 0
    rows = read_rows(out)
    assert {r.band for r in rows} == {"ai>=0.52 real<0.48 evidence=report"}
    summary = json.loads(sidecars(out).summary.read_text())
    assert summary["judges"] == [
        {"model": rows[0].model, "band": rows[0].band, "rows": 3},
    ]


def test_a_killed_run_resumed_with_another_band_is_refused(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal without a summary (what SIGKILL leaves) still knows its rows' band."""
    tree = _tree(tmp_path / "t")
    out = tmp_path / "v.csv"
    args = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main([*args, "--threshold", "0.9"]) == 0
    sidecars(out).summary.unlink()
    out.rename(sidecars(out).journal("csv"))  # killed before it was published
    (tree / "new.jpg").write_bytes(jpeg_bytes(photo(50, 40, seed=9)))
    capsys.readouterr()
    assert main([*args, "--resume", "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ai edge 0.9 vs 0.5" in err[0] and "--mix-models" in err[0]
    assert main([*args, "--resume", "--threshold", "0.9"]) == 0  # the same band continues
    assert len(read_rows(out)) == 4


def test_an_evidence_policy_change_on_resume_is_refused(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _tree(tmp_path / "t")
    out = tmp_path / "v.csv"
    args = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q", "--resume"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--evidence-policy", "override"]) == 2
    assert "evidence policy report vs override" in capsys.readouterr().err


def test_the_threshold_a_summary_printed_resumes_its_own_scan(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Edges are used, recorded and compared in one canonical form: float noise in a
    typed or recorded edge is the same edge."""
    tree = _tree(tmp_path / "t")
    out = tmp_path / "v.csv"
    args = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main([*args, "--threshold", "0.8157630000000001"]) == 0
    summary = json.loads(sidecars(out).summary.read_text())
    assert summary["threshold"] == 0.815763 == canonical_edge(0.8157630000000001)
    (tree / "new.jpg").write_bytes(jpeg_bytes(photo(50, 40, seed=9)))
    assert main([*args, "--resume", "--threshold", str(summary["threshold"])]) == 0


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--real-below", "0.7"], "--real-below 0.7 is above the model's ai edge 0.6"),
        (["--threshold", "0.2"], "the model's real edge 0.3 is above --threshold 0.2"),
        (["--threshold", "0.4", "--real-below", "0.5"], "above --threshold"),
    ],
)
def test_the_band_is_validated_as_a_whole(
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    says: str,
) -> None:
    """Whichever edge came from the options and which from the model, a real edge above
    the ai edge is refused in one line (the uncertain band would silently vanish)."""
    model = _banded(tiny_model, tmp_path, 0.6, 0.3)
    tree = _tree(tmp_path / "t")
    out = tmp_path / "v.csv"
    assert main([str(tree), "--out", str(out), "--model", str(model), "-q", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not out.exists()


def test_merge_refuses_shards_judged_otherwise(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _tree(tmp_path / "t", 20)
    parts = []
    for i, edge in ((0, "0.5"), (1, "0.6")):
        part = tmp_path / f"p{i}.csv"
        args = [str(tree), "--out", str(part), "--model", str(tiny_model), "-q"]
        assert main([*args, "--shard", f"{i}/2", "--threshold", edge]) == 0
        parts.append(str(part))
    out = tmp_path / "all.csv"
    capsys.readouterr()
    assert main(["merge", *parts, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ai edge 0.5 vs 0.6" in err and not out.exists()
    assert main(["merge", *parts, "--out", str(out), "--mix-models"]) == 0
    assert len(read_rows(out)) == 20


def test_a_killed_overwrite_leaves_no_summary_of_the_run_before(
    tiny_model: Path, tmp_path: Path
) -> None:
    """--overwrite starts a new output: the old run's summary goes at once, so that a
    resume after a kill never takes the old summary for the new rows."""
    tree = _tree(tmp_path / "t", 400)
    out = tmp_path / "v.csv"
    base = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
    assert main([*base[:-1], "-q", "--threshold", "0.9"]) == 0
    summary = sidecars(out).summary
    assert summary.exists()
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", *base, "--overwrite", "--threshold", "0.5",
           "--workers", "1", "--batch-size", "1"]  # fmt: skip
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    journal = sidecars(out).journal("csv")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if journal.exists() and journal.stat().st_size > 2000:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert journal.exists(), "the run ended before it could be killed"
    assert not summary.exists()
    assert main([*base, "--resume", "--threshold", "0.9"]) == 2  # its rows know their band
    assert main([*base, "--resume", "--threshold", "0.5"]) == 0
    assert {r.band for r in read_rows(out)} == {band_label(0.5, None, "report")}


def test_judge_difference_names_each_part() -> None:
    a = ("m@1", band_label(0.8, 0.1, "report"))
    b = ("m@2", band_label(0.8, 0.2, "override"))
    assert judge_difference(a, b) == (
        "model m@1 vs m@2; real edge 0.1 vs 0.2; evidence policy report vs override"
    )
    assert judge_difference(a, a) == "nothing"
