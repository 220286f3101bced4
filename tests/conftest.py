"""Shared fixtures: a tiny exported model and generators of awkward image files; a child
process that obeys file modes even as root; and, under CI (``CI=true``), no skip but the
ones named in :data:`CI_ALLOWED_SKIPS`."""

from __future__ import annotations

import ctypes
import io
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The skips a CI run may have (a reason starts with one of these): the machine has no
#: GPU, or the shared data set is not beside the checkout. Any other skip under CI (a
#: missing extra, a missing browser, a privilege that cannot be dropped) fails the run.
CI_ALLOWED_SKIPS = (
    "needs a CUDA GPU",
    "this machine has a CUDA device",
    "no shared data at",
    # .ci/run without root and without Chromium says so and sets this: the browser test
    # of the report is then the one skip it accepts beside those
    *(("no Chromium here",) if os.environ.get("AISCAN_NO_BROWSER") == "1" else ()),
)
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        _SKIPPED.append((report.nodeid, reason.removeprefix("Skipped: ")))


def unlisted_skips(skipped: list[tuple[str, str]]) -> list[str]:
    """The skips that CI does not accept."""
    return [f"{node}: {why}" for node, why in skipped if not why.startswith(CI_ALLOWED_SKIPS)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bad = unlisted_skips(_SKIPPED)
    if os.environ.get("CI") == "true" and bad:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("skips that CI does not accept (tests/conftest.py):", red=True)
            for line in bad:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _drop_dac_override() -> None:
    """preexec_fn: drop root's power to ignore file permissions, for this child only.

    CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) leave the bounding set, so the
    interpreter exec'd next runs as root but obeys file modes like any user would.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_obeying_file_modes(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a child that obeys file modes, as root too (never a skip: a root
    that cannot drop the override fails the test)."""
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_drop_dac_override if os.geteuid() == 0 else None,
    )


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients, edges and sensor-like noise: compresses like a photo, not flat."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(x / (17 + 5 * c) + y / (23 + 3 * c) + seed) for c in range(3)], axis=-1
    )
    base[(x // 37 + y // 29) % 7 == 0] *= 0.4  # hard edges
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its data is a tiny image's)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip themselves where no CUDA device is visible."""
    from aiscan.scanner.core.infer import cuda_device_count

    if cuda_device_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _tiny(folder: Path, resize: str) -> Path:
    """A tiny classifier built with onnx.helper (no torch, no timm): the channel means of
    a 64x64 input through one linear layer into (ai, real) logits, with aiscan metadata.
    Its p_ai follows the colours of the image (warmer: more "ai"), so different images
    get different scores; untrained, as its metadata says."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from aiscan.model.meta import ModelInfo, write_info
    from aiscan.model.preprocessing import Preprocessing

    weight = np.array([[4.0, 0.0], [0.5, 0.0], [-4.0, 0.0]], np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["means", "weight"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.array([0.1, 0.0], np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = folder / f"tiny-{resize}.onnx"
    onnx.save(model, str(out))
    info = ModelInfo(
        model_id="tiny-test" if resize == "squash" else f"tiny-test-{resize}",
        arch="tiny-linear-on-channel-means",
        preprocessing=Preprocessing(input_size=(64, 64), resize=resize),
        trained=False,
    )
    write_info(out, info)
    return out


def _timm_tiny(folder: Path) -> Path:
    """timm's test_efficientnet, exported by aiscan's own export (tests of the export and
    training paths; they need torch and timm)."""
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    from aiscan.export.onnx_export import export_onnx
    from aiscan.model.meta import ModelInfo
    from aiscan.model.preprocessing import Preprocessing

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=2, pretrained=False)
    info = ModelInfo(
        model_id="tiny-timm",
        arch="test_efficientnet",
        preprocessing=Preprocessing(input_size=(64, 64)),
        trained=False,
    )
    return export_onnx(model, info, folder / "tiny-timm.onnx")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained classifier (onnx.helper), 64x64 input, with aiscan metadata."""
    return _tiny(tmp_path_factory.mktemp("model"), "squash")


@pytest.fixture(scope="session")
def timm_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's test_efficientnet exported by aiscan-export's code (needs torch, timm)."""
    return _timm_tiny(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def tiny_crop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the "crop" resize policy (aspect kept, centred region)."""
    return _tiny(tmp_path_factory.mktemp("model"), "crop")


@pytest.fixture(scope="session")
def gpu_model(request: pytest.FixtureRequest) -> Path:
    """A model for GPU tests: $AISCAN_TEST_MODEL (GPU machines without timm), else tiny."""
    given = os.environ.get("AISCAN_TEST_MODEL")
    return Path(given) if given else Path(request.getfixturevalue("tiny_model"))


@pytest.fixture()
def bad_tree(tmp_path: Path) -> dict[str, str]:
    """Good images beside every kind of bad file; maps file name -> expected status."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, status: str) -> None:
        (root / name).write_bytes(data)
        expect[name] = status

    good = jpeg_bytes(photo(320, 240))
    put("a_good.jpg", good, "ok")
    put("sub/b_good.png", _encode(photo(100, 80), "PNG"), "ok")
    put("c_truncated.jpg", good[: len(good) // 2], "error")
    put("d_zero.jpg", b"", "error")
    put("e_text.jpg", b"this is not an image\n", "error")
    put("f_notes.txt", b"plain text\n", "skipped")
    put("g_huge.png", png_with_size(60_000, 60_000), "error")
    put("h_corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "error")
    put("i_empty_noext", b"", "skipped")
    put("sub/j_good.webp", _encode(photo(64, 64), "WEBP"), "ok")
    return {str(root / k): v for k, v in expect.items()}


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


encode = _encode
