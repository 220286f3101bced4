"""The scanner end to end: every file gets exactly one honest row, whatever happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiscan.scanner.cli import main
from aiscan.scanner.cli.common import EXIT_FILE_ERRORS, EXIT_OK, EXIT_USAGE
from aiscan.scanner.core import infer as infer_mod
from aiscan.scanner.core import models as config_mod
from aiscan.scanner.core.infer import cuda_device_count
from aiscan.scanner.output.formats import read_rows
from tests.conftest import jpeg_bytes, photo, run_obeying_file_modes


def _scan(paths: list[str], out: Path, model: Path, *extra: str) -> int:
    return main([*paths, "--out", str(out), "--model", str(model), "--quiet", *extra])


def test_bad_files_each_get_a_row_and_the_scan_finishes(
    bad_tree: dict[str, str], tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infer_mod, "cuda_device_count", lambda: 0)  # --device auto, no GPU
    out = tmp_path / "v.csv"
    root = str(Path(next(iter(bad_tree))).parent)
    assert _scan([root], out, tiny_model, "--batch-size", "3") == EXIT_FILE_ERRORS
    rows = {r.path: r for r in read_rows(out)}
    summary = json.loads((tmp_path / "v.csv.summary.json").read_text())
    assert summary["real_below"] == summary["threshold"]
    assert {p: r.status for p, r in rows.items()} == bad_tree
    for r in rows.values():
        if r.status == "ok":
            assert r.p_ai is not None and 0 <= r.p_ai <= 1
            # the tiny model has no band: ai exactly at or above its threshold
            assert r.verdict == ("ai" if r.p_ai >= summary["threshold"] else "real"), r
            assert r.width and r.height and r.bytes and not r.error
        else:
            assert r.p_ai is None and r.verdict == "" and r.error
    by_name = {Path(p).name: r.error for p, r in rows.items()}
    assert "truncated" in by_name["c_truncated.jpg"]
    assert (
        by_name["d_zero.jpg"] == "has an image extension but is not an image: empty file (0 bytes)"
    )
    assert "MP" in by_name["g_huge.png"] and "--max-pixels" in by_name["g_huge.png"]
    assert summary["statuses"] == {"ok": 3, "skipped": 2, "error": 5}
    assert summary["model_trained"] is False and summary["warnings"]
    assert summary["providers"] == ["CPUExecutionProvider"]


def test_the_summary_names_the_files_that_failed_and_why(
    bad_tree: dict[str, str], tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: "error 5" and exit 1 come with the files and their reasons."""
    root = str(Path(next(iter(bad_tree))).parent)
    capsys.readouterr()
    assert _scan([root], tmp_path / "v.csv", tiny_model) == EXIT_FILE_ERRORS
    err = capsys.readouterr().err
    failed = [Path(p).name for p, s in bad_tree.items() if s == "error"]
    assert "error rows" in err and "--max-error-rate" in err
    assert all(name in err for name in failed), err
    summary = json.loads((tmp_path / "v.csv.summary.json").read_text())
    assert {Path(e["path"]).name for e in summary["error_sample"]} == set(failed)


def _scan_obeying_file_modes(
    tree: Path, out: Path, model: Path, restore: Path
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child that obeys file modes even as root; ``restore`` gets mode 755
    back afterwards."""
    cmd = [sys.executable, "-m", "aiscan.scanner.cli", str(tree), "--out", str(out)]
    try:
        return run_obeying_file_modes([*cmd, "--model", str(model), "--quiet"])
    finally:
        restore.chmod(0o755)


def test_unreadable_file_and_folder_become_error_rows(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "photos"
    (tree / "locked").mkdir(parents=True)
    for name in ("ok.jpg", "secret.jpg", "locked/x.jpg"):
        (tree / name).write_bytes(jpeg_bytes(photo(64, 64)))
    (tree / "secret.jpg").chmod(0)
    (tree / "locked").chmod(0)
    out = tmp_path / "v.csv"
    proc = _scan_obeying_file_modes(tree, out, tiny_model, restore=tree / "locked")
    assert proc.returncode == EXIT_FILE_ERRORS, proc.stderr
    rows = {Path(r.path).name: r for r in read_rows(out)}
    assert set(rows) == {"ok.jpg", "secret.jpg", "locked"}
    assert rows["ok.jpg"].status == "ok"
    assert (rows["secret.jpg"].status, rows["secret.jpg"].error) == ("error", "permission denied")
    assert rows["locked"].status == "error" and "Permission denied" in rows["locked"].error


def _make_tree(root: Path, n: int) -> list[str]:
    data = jpeg_bytes(photo(640, 480))
    paths = []
    for i in range(n):
        p = root / f"d{i % 7}" / f"{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        paths.append(str(p))
    return paths


def _data_rows(path: Path) -> int:
    return max(0, path.read_bytes().count(b"\r\n") - 1) if path.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_scan_then_resume_gives_every_file_exactly_once(
    tiny_model: Path, tmp_path: Path
) -> None:
    paths = _make_tree(tmp_path / "tree", 1200)
    out = tmp_path / "v.csv"
    partial = tmp_path / "v.csv.partial"
    cmd = [
        sys.executable,
        "-m",
        "aiscan.scanner.cli",
        str(tmp_path / "tree"),
        "--out",
        str(out),
        "--model",
        str(tiny_model),
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _data_rows(partial) < 100 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = _data_rows(partial)
    assert not out.exists(), "the scan finished before it could be killed"
    assert 100 <= written < len(paths)
    rc = main(
        [
            str(tmp_path / "tree"),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--resume",
            "--quiet",
        ]
    )
    assert rc == EXIT_OK
    got = [r.path for r in read_rows(out)]
    assert len(got) == len(set(got)) == len(paths)
    assert set(got) == set(paths)
    summary = json.loads((tmp_path / "v.csv.summary.json").read_text())
    assert summary["files_resumed"] >= written - 8  # a torn batch may be cut
    assert summary["files_resumed"] + summary["files_this_run"] == len(paths)


def test_resume_of_a_finished_scan_adds_only_new_files(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _make_tree(tree, 5)
    out = tmp_path / "v.jsonl"
    assert _scan([str(tree)], out, tiny_model, "--format", "jsonl") == EXIT_OK
    (tree / "new.jpg").write_bytes(jpeg_bytes(photo(50, 50)))
    assert _scan([str(tree)], out, tiny_model, "--format", "jsonl", "--resume") == EXIT_OK
    paths = [r.path for r in read_rows(out)]
    assert len(paths) == 6 == len(set(paths)) and paths[-1].endswith("new.jpg")


def test_threshold_override_and_shards(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    paths = _make_tree(tree, 12)
    out = tmp_path / "all.csv"
    assert _scan([str(tree)], out, tiny_model, "--threshold", "0") == EXIT_OK
    assert {r.verdict for r in read_rows(out)} == {"ai"}
    seen = []
    for i in range(3):
        shard_out = tmp_path / f"s{i}.csv"
        assert _scan([str(tree)], shard_out, tiny_model, "--shard", f"{i}/3") == EXIT_OK
        seen += [r.path for r in read_rows(shard_out)]
    assert sorted(seen) == sorted(paths)


def test_sha256_column(tiny_model: Path, tmp_path: Path) -> None:
    import hashlib

    tree = tmp_path / "tree"
    paths = _make_tree(tree, 2)
    out = tmp_path / "v.csv"
    assert _scan([str(tree)], out, tiny_model, "--sha256") == EXIT_OK
    digest = hashlib.sha256(Path(paths[0]).read_bytes()).hexdigest()
    assert {r.sha256 for r in read_rows(out)} == {digest}


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_is_a_usage_error_never_a_cpu_run(
    tiny_model: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    _make_tree(tree, 1)
    assert _scan([str(tree)], tmp_path / "v.csv", tiny_model, "--device", "cuda") == EXIT_USAGE
    assert not (tmp_path / "v.csv").exists()


@pytest.mark.gpu
def test_device_cuda_on_a_gpu_runs_there(tiny_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _make_tree(tree, 1)
    assert _scan([str(tree)], tmp_path / "v.csv", tiny_model, "--device", "cuda") == EXIT_OK
    summary = json.loads((tmp_path / "v.csv.summary.json").read_text())
    assert summary["providers"][0] == "CUDAExecutionProvider"


def test_usage_errors_exit_2(
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree = tmp_path / "tree"
    _make_tree(tree, 1)
    out = tmp_path / "v.csv"
    assert _scan([str(tmp_path / "missing")], out, tiny_model) == EXIT_USAGE
    assert _scan([str(tree)], out, tmp_path / "nope.onnx") == EXIT_USAGE
    assert _scan([str(tree)], out, tiny_model, "--batch-size", "0") == EXIT_USAGE
    monkeypatch.setattr(config_mod, "shipped_model", lambda name="default": None)
    assert main([str(tree), "--out", str(out), "--quiet"]) == EXIT_USAGE
    assert "ships no 'default' model" in capsys.readouterr().err
    assert _scan([str(tree)], out, tiny_model) == EXIT_OK
    assert _scan([str(tree)], out, tiny_model) == EXIT_USAGE  # exists: needs --resume


def test_help_is_fast_and_imports_no_heavy_stack() -> None:
    code = (
        "import sys\nfrom aiscan.scanner.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'nvidia.dali', 'onnxruntime', 'timm') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--out" in proc.stdout and "HEAVY []" in proc.stdout


@pytest.mark.parametrize("policy", ["squash", "crop"])
def test_scan_honours_the_models_resize_policy(
    policy: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The scanner's p_ai is the model's on the reference pixels of its own policy."""
    import numpy as np
    from PIL import Image

    from aiscan.model.pixels import normalize_batch, reference_pixels
    from aiscan.scanner.core.infer import Classifier
    from tests.conftest import encode

    model = request.getfixturevalue("tiny_model" if policy == "squash" else "tiny_crop_model")
    img = np.asarray(photo(240, 120, seed=4)).copy()
    img[:, :60] = (255, 0, 0)  # the left and right quarters only a squash shows
    img[:, 180:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    path.write_bytes(encode(Image.fromarray(img), "PNG"))
    out = tmp_path / "v.csv"
    assert _scan([str(path)], out, model) == EXIT_OK
    (row,) = read_rows(out)
    clf = Classifier(model, "cpu")
    spec = clf.info.preprocessing
    assert spec.resize == policy
    want = clf.predict(normalize_batch([reference_pixels(str(path), spec)], spec))[0]
    assert row.p_ai == pytest.approx(float(want), abs=1e-5)
    centre = reference_pixels(str(path), spec)
    assert (centre[:, :4, 0].mean() > 200) == (policy == "squash")  # red edge only in squash


def test_a_second_run_on_a_live_output_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.scanner.output.lock import OutputLockedError
    from aiscan.scanner.output.writer import VerdictWriter

    tree = tmp_path / "photos"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    out = tmp_path / "v.csv"
    live = VerdictWriter(out)  # what a running scan holds
    for flag in ("--resume", "--overwrite"):
        assert _scan([str(tree)], out, tiny_model, flag) == EXIT_USAGE
    with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on "):
        VerdictWriter(out, resume=True)
    assert not out.exists()  # the refused runs touched nothing
    live.close()
    assert not (tmp_path / "v.csv.lock").exists()
    assert _scan([str(tree)], out, tiny_model, "--resume") == EXIT_OK
    assert [r.status for r in read_rows(out)] == ["ok"]
    assert not (tmp_path / "v.csv.lock").exists()


def test_the_lock_dies_with_a_killed_run(tiny_model: Path, tmp_path: Path) -> None:
    code = (
        "import sys, time; from aiscan.scanner.output import VerdictWriter; "
        "w = VerdictWriter(sys.argv[1]); print('locked', flush=True); time.sleep(60)"
    )
    out = tmp_path / "v.csv"
    child = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"locked"
    tree = tmp_path / "photos"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    assert _scan([str(tree)], out, tiny_model, "--resume") == EXIT_USAGE
    child.kill()
    child.wait()
    assert (tmp_path / "v.csv.lock").exists()  # left behind by the killed run...
    assert _scan([str(tree)], out, tiny_model, "--resume") == EXIT_OK  # ...and not in the way


def test_an_output_that_cannot_be_written_is_exit_3_in_one_line(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import errno

    from aiscan.scanner.cli.common import EXIT_ENVIRONMENT
    from aiscan.scanner.output.writer import VerdictWriter

    tree = tmp_path / "photos"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(64, 64)))

    def full(self: VerdictWriter, rows: list) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VerdictWriter, "write", full)
    assert _scan([str(tree)], tmp_path / "v.csv", tiny_model) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "v.csv.partial").exists() and not (tmp_path / "v.csv.lock").exists()


def test_a_read_only_output_folder_is_exit_3(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.scanner.cli.common import EXIT_ENVIRONMENT

    tree = tmp_path / "photos"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    outdir = tmp_path / "ro"
    outdir.mkdir()
    outdir.chmod(0o555)
    proc = _scan_obeying_file_modes(tree, outdir / "v.csv", tiny_model, restore=outdir)
    assert proc.returncode == EXIT_ENVIRONMENT, proc.stderr
    assert "Permission denied" in proc.stderr and "Traceback" not in proc.stderr


def test_markup_in_paths_and_messages_is_shown_as_text(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the summary table
    tree = tmp_path / "x[" / "b]photos"  # the path holds "[/b]", which rich would choke on
    tree.mkdir(parents=True)
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    (tmp_path / "[bold]").mkdir()
    out = tmp_path / "[bold]" / "v.csv"
    assert main([str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]) == EXIT_OK
    assert str(out) in capsys.readouterr().err  # the summary's output cell, shown literally
    assert _scan([str(tree)], out, tiny_model) == EXIT_USAGE  # exists: error names the path
    assert f"{out} exists" in capsys.readouterr().err


def test_an_empty_folder_says_so_and_zero_workers_is_refused(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "v.csv"
    assert _scan([str(empty)], out, tiny_model) == EXIT_OK
    assert f"no files found under {empty}" in capsys.readouterr().err
    summary = json.loads((tmp_path / "v.csv.summary.json").read_text())
    assert any("no files found" in w for w in summary["warnings"])
    assert _scan([str(empty)], tmp_path / "w.csv", tiny_model, "--workers", "0") == EXIT_USAGE
    assert "--workers must be within 1..256, got 0" in capsys.readouterr().err


def test_one_row_per_file_however_the_tree_is_named(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative then absolute on --resume, a file inside a given folder, and an output
    written inside the scanned tree: every image once, the scan's own files never."""
    tree = tmp_path / "photos"
    paths = _make_tree(tree, 5)
    monkeypatch.chdir(tmp_path)
    out = tree / "v.csv"  # inside the tree it scans
    assert _scan(["photos", paths[0]], out, tiny_model) == EXIT_OK
    first = read_rows(out)
    assert sorted(r.path for r in first) == sorted(paths)  # absolute, no own files
    assert _scan([str(tree)], out, tiny_model, "--resume") == EXIT_OK
    assert read_rows(out) == first  # nothing new, nothing doubled


def test_max_error_rate_tolerates_a_few_bad_files(
    bad_tree: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    root = str(Path(next(iter(bad_tree))).parent)
    errors = sum(s == "error" for s in bad_tree.values()) / len(bad_tree)  # 5 of 10
    below = str(errors - 0.05)
    assert _scan([root], tmp_path / "a.csv", tiny_model, "--max-error-rate", below) == 1
    assert _scan([root], tmp_path / "b.csv", tiny_model, "--max-error-rate", str(errors)) == 0
    assert _scan([root], tmp_path / "c.csv", tiny_model, "--max-error-rate", "1.5") == EXIT_USAGE


def test_aiscan_defaults_are_the_configs(tmp_path: Path) -> None:
    """Each option's default is ScanConfig's own, declared once, there."""
    from aiscan.scanner.cli.scan import _config, build_parser
    from aiscan.scanner.run.config import ScanConfig

    root = str(tmp_path)
    args = build_parser().parse_args([root, "--out", str(tmp_path / "v.csv")])
    assert _config(args) == ScanConfig(paths=(root,), out=tmp_path / "v.csv")
    args = build_parser().parse_args(
        [root, "-o", "v.out", "--prefetch", "5", "--max-file-size", "7", "--format", "jsonl"]
    )
    cfg = _config(args)
    assert (cfg.prefetch, cfg.max_file_mb, cfg.fmt) == (5, 7, "jsonl")
