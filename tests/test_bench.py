"""The benchmark runner itself: timing discipline, result files. No test asserts a speed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from aiscan.benchmarks.cli import main, ratios
from aiscan.benchmarks.runners import timed


def test_warmup_is_not_timed() -> None:
    """The first call (compile, cache, page in) runs on a few files and is never among
    the timed runs: a clock that the runs themselves advance shows it exactly."""
    calls: list[int] = []
    now = [0.0]

    def run(files: Sequence[Path]) -> None:
        calls.append(len(files))
        now[0] += 100.0 if len(calls) == 1 else 2.0  # a slow first call

    files = [Path(f"{i}") for i in range(10)]
    timing = timed("r", "c", run, files, repeats=3, warmup=2, clock=lambda: now[0])
    assert calls == [2, 10, 10, 10]
    assert timing.seconds == [2.0, 2.0, 2.0]
    assert timing.images == 10 and timing.images_per_s == 5.0


def test_ratios_compare_end_to_end_with_baselines_and_stages() -> None:
    rows = [
        {
            "corpus": "c",
            "stage": "baseline",
            "runner": "naive PIL + ORT (1 by 1)",
            "images_per_s": 50.0,
        },
        {"corpus": "c", "stage": "decode", "runner": "d", "images_per_s": 400.0},
        {"corpus": "c", "stage": "inference", "runner": "i", "images_per_s": 200.0},
        {"corpus": "c", "stage": "end to end", "runner": "e", "images_per_s": 160.0},
        {"corpus": "c", "stage": "evidence off", "runner": "n", "images_per_s": 164.0},
    ]
    assert ratios(rows) == {
        "c": {
            "vs naive PIL + ORT": 3.2,
            "slowest stage / end to end": 1.25,
            "end to end: with evidence / without (time)": 1.025,
        }
    }


@pytest.mark.slow
def test_quick_run_writes_json_and_csv(tiny_model: Path, tmp_path: Path) -> None:
    rc = main(
        [
            "--quick",
            "--model",
            str(tiny_model),
            "--corpus",
            "1024px,1024px-png",
            "--images",
            "6",
            "--baselines",
            "ort",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--data-dir",
            str(tmp_path / "none"),
            "--results-dir",
            str(tmp_path / "res"),
        ]
    )
    assert rc == 0
    (path,) = (tmp_path / "res").glob("throughput_*.json")
    cores = len(os.sched_getaffinity(0))  # the machine's, not the file's own word for it
    assert path.name == f"throughput_cpu-decode_onnxruntime-cpu_fp32_cpu{cores}core_quick.json"
    results = json.loads(path.read_text())
    assert results["machine"]["cores"] == cores and results["quick"] is True
    stages = {t["stage"] for t in results["timings"]}
    assert {
        "baseline",
        "discovery",
        "decode",
        "evidence",
        "inference",
        "write",
        "end to end",
        "evidence off",
    } <= stages
    for t in results["timings"]:
        assert t["images"] == 6 and len(t["seconds"]) == 1 and t["images_per_s"] > 0
    assert results["corpora"][0]["content"] == "procedural texture"
    assert [c["png"] for c in results["corpora"]] == [False, True]
    pngs = (tmp_path / "cache" / "1024px-png-6").rglob("*")
    assert {p.suffix for p in pngs if p.is_file()} == {".png"}
    for entry in results["ratios"].values():
        assert entry["end to end: with evidence / without (time)"] > 0
    assert path.with_suffix(".csv").read_text().startswith("stage,runner,corpus")


def test_models_name_shipped_models_or_paths_and_a_bad_one_is_one_line(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--models takes what --model takes: a shipped model's name ("fast") or a path; one
    that is neither is one line and exit 2, before any corpus is made."""
    from aiscan.scanner.core.models import shipped_model

    base = ["--quick", "--model", str(tiny_model), "--results-dir", str(tmp_path / "res")]
    assert main([*base, "--models", f"{tiny_model},nope.onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.onnx" in err
    if shipped_model("fast") is None:
        pytest.skip("this build ships no fast model")
    assert main([*base, "--models", "fast", "--corpus", "1024px", "--images", "4",
                 "--baselines", "ort", "--cache-dir", str(tmp_path / "cache"),
                 "--data-dir", str(tmp_path / "none")]) == 0  # fmt: skip
    results = json.loads(next((tmp_path / "res").glob("throughput_*.json")).read_text())
    runners = {t["runner"] for t in results["timings"] if t["stage"] == "inference"}
    assert runners == {"infer fp32 cpu fast", f"infer fp32 cpu {tiny_model.stem}"}, runners


@pytest.mark.slow
def test_nightly_run_measures_both_nights(tiny_model: Path, tmp_path: Path) -> None:
    args = ["--nightly", "40", "--model", str(tiny_model), "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--results-dir", str(tmp_path / "res")]) == 0
    (path,) = (tmp_path / "res").glob("nightly_*.json")
    n = json.loads(path.read_text())["nightly"]
    assert n["first_night"]["files_scanned"] == 40 and n["second_night"]["files_scanned"] == 0
    assert n["second_night"]["state"]["unchanged"] == 40
    assert n["state_bytes"] > 0 and n["state_bytes_per_million_files"] > n["state_bytes"]


def test_report_run_measures_a_large_verdict_file(tmp_path: Path) -> None:
    args = ["--report", "300", "--cache-dir", str(tmp_path / "c"), "--data-dir", str(tmp_path)]
    assert main([*args, "--results-dir", str(tmp_path / "res")]) == 0
    (path,) = (tmp_path / "res").glob("report_*.json")
    r = json.loads(path.read_text())["report"]
    assert r["rows"] == 300 and 0 < r["flagged"] < 300
    assert r["gallery"] == min(200, r["flagged"]) and r["disagreements"] > 0
    assert r["bytes"] > 0 and r["seconds"] > 0
    files = [p for p in (tmp_path / "c" / "linked-300").rglob("*.jpg")]
    assert len(files) == 300 and files[0].stat().st_nlink > 1  # hard links, not copies
