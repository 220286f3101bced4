from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from aiscan.scanner.core import discovery as discover_mod
from aiscan.scanner.core.discovery import discover, in_shard
from tests.conftest import run_obeying_file_modes


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def _rel(root: Path, found: list[discover_mod.Found]) -> list[str]:
    return [os.path.relpath(f.path, root) for f in found]


def test_recursive_sorted_and_deterministic(tmp_path: Path) -> None:
    _tree(tmp_path, ["b/2.jpg", "a.jpg", "b/1.jpg", "c/d/e.png", "B.jpg"])
    first = _rel(tmp_path, list(discover([str(tmp_path)])))
    assert first == ["B.jpg", "a.jpg", "b/1.jpg", "b/2.jpg", "c/d/e.png"]
    assert first == _rel(tmp_path, list(discover([str(tmp_path)])))


def test_symlink_loops_are_walked_once(tmp_path: Path) -> None:
    _tree(tmp_path, ["a/x.jpg"])
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a/loop -> root
    (tmp_path / "alias").symlink_to(tmp_path / "a")  # second way into a/
    (tmp_path / "a" / "link.jpg").symlink_to(tmp_path / "a" / "x.jpg")
    found = _rel(tmp_path, list(discover([str(tmp_path)])))
    assert sorted(found) == ["a/link.jpg", "a/x.jpg"]


def test_broken_links_and_special_files_get_rows(tmp_path: Path) -> None:
    (tmp_path / "dead.jpg").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "pipe.jpg")
    found = {Path(f.path).name: f for f in discover([str(tmp_path)])}
    assert found["dead.jpg"].error == "broken symbolic link"
    assert found["pipe.jpg"].skip_reason == "not a regular file (fifo)"


def test_file_roots_and_missing_roots(tmp_path: Path) -> None:
    _tree(tmp_path, ["one.jpg"])
    found = list(discover([str(tmp_path / "one.jpg"), str(tmp_path / "gone")]))
    assert found[0].path.endswith("one.jpg") and not found[0].error
    assert found[1].error == "path does not exist"


def test_unlistable_directory_becomes_an_error_row(tmp_path: Path) -> None:
    _tree(tmp_path, ["locked/x.jpg", "open/y.jpg"])
    (tmp_path / "locked").chmod(0)
    code = (
        "import json, sys\n"
        "from aiscan.scanner.core.discovery import discover\n"
        "print(json.dumps({f.path: f.error for f in discover([sys.argv[1]])}))\n"
    )
    try:  # in a child that obeys file modes, as root too
        proc = run_obeying_file_modes([sys.executable, "-c", code, str(tmp_path)])
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    found = {Path(p).name: error for p, error in json.loads(proc.stdout).items()}
    assert "Permission denied" in found["locked"]
    assert found["y.jpg"] == ""


def test_huge_directory_streams_without_sorting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discover_mod, "SORT_LIMIT", 5)
    names = [f"{i:03d}.jpg" for i in range(40)]
    _tree(tmp_path, names)
    gen = discover([str(tmp_path)])
    first = next(gen)  # available before the whole folder is read
    rest = list(gen)
    assert sorted(_rel(tmp_path, [first, *rest])) == names  # every file, once


def test_shards_partition_the_files() -> None:
    paths = [f"/data/{i}.jpg" for i in range(1000)]
    shards = [[p for p in paths if in_shard(p, i, 4)] for i in range(4)]
    assert sorted(p for s in shards for p in s) == sorted(paths)
    assert all(150 < len(s) < 350 for s in shards)


def test_paths_are_absolute_and_each_file_comes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, ["photos/a.jpg", "photos/sub/b.jpg", "other.jpg"])
    monkeypatch.chdir(tmp_path)
    roots = [
        "photos",  # relative
        str(tmp_path / "photos"),  # the same folder, absolute
        "photos/sub",  # a folder inside it
        "photos/sub/b.jpg",  # a file inside it
        "./other.jpg",
        "other.jpg",  # the same file, spelled twice
    ]
    found = [f.path for f in discover(roots)]
    assert found == [
        str(tmp_path / "photos" / "a.jpg"),
        str(tmp_path / "photos" / "sub" / "b.jpg"),
        str(tmp_path / "other.jpg"),
    ]
    assert [f.path for f in discover(["photos/sub/b.jpg", "photos"])] == [
        str(tmp_path / "photos" / "a.jpg"),
        str(tmp_path / "photos" / "sub" / "b.jpg"),
    ]


def test_excluded_files_are_not_yielded(tmp_path: Path) -> None:
    _tree(tmp_path, ["a.jpg", "v.csv.partial", "v.csv.lock"])
    own = [str(tmp_path / "v.csv.partial"), str(tmp_path / "v.csv.lock")]
    assert [Path(f.path).name for f in discover([str(tmp_path)], exclude=own)] == ["a.jpg"]
