"""Export: metadata written once and read back, reduced-precision variants that load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from aiscan.scanner.core.infer import Classifier
from tests.conftest import jpeg_bytes, photo

onnx = pytest.importorskip("onnx")


def test_write_metadata_replaces_only_aiscan_keys(timm_tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.model.meta import write_info

    path = tmp_path / "m.onnx"
    path.write_bytes(timm_tiny_model.read_bytes())
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "owner", "someone"
    onnx.save(model, str(path))
    info = Classifier(path, "cpu").info
    write_info(path, replace(info, threshold=0.25, extra={"note": "x"}))
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["owner"] == "someone" and props["aiscan.threshold"] == "0.25"
    again = Classifier(path, "cpu").info
    assert again.threshold == 0.25 and again.extra == {"note": "x"}


def _calibration(tmp_path: Path, n: int = 8) -> list[str]:
    files = []
    for i in range(n):
        f = tmp_path / f"c{i}.jpg"
        f.write_bytes(jpeg_bytes(photo(96, 80, seed=i)))
        files.append(str(f))
    return files


def test_fp16_and_int8_variants_keep_metadata_and_run(
    timm_tiny_model: Path, tmp_path: Path
) -> None:
    from aiscan.export.variants import convert_fp16, quantize_int8
    from aiscan.model.pixels import load_pixels, normalize_batch

    files = _calibration(tmp_path)
    fp16 = convert_fp16(timm_tiny_model, tmp_path / "m.fp16.onnx")
    int8 = quantize_int8(timm_tiny_model, tmp_path / "m.int8.onnx", files)
    base = Classifier(timm_tiny_model, "cpu")
    spec = base.info.preprocessing
    x = normalize_batch([load_pixels(f, spec).pixels for f in files], spec)
    ref = base.predict(x)
    for path, precision in ((fp16, "fp16"), (int8, "int8")):
        clf = Classifier(path, "cpu")
        assert clf.info.extra["precision"] == precision
        assert clf.info.preprocessing == spec and clf.info.threshold == base.info.threshold
        p = clf.predict(x)
        assert p.shape == ref.shape and np.isfinite(p).all()
        # the untrained tiny model's p_ai lie within 0.4996..0.5056 here; measured max
        # differences: fp16 2e-6, int8 1.1e-3 (AVX2-only EPYC)
        np.testing.assert_allclose(p, ref, atol=2e-2 if precision == "fp16" else 5e-3)
    assert fp16.stat().st_size < timm_tiny_model.stat().st_size


def test_export_and_eval_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiscan.export.cli import main as export_main
    from aiscan.train.eval_cli import main as eval_main

    out = str(tmp_path / "m.onnx")
    assert export_main(["--checkpoint", str(tmp_path / "none.pth"), "--out", out]) == 2
    assert export_main(["--random-init", "--arch", "no_such_arch", "--out", out]) == 2
    assert eval_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("error:" in line for line in err), err
    assert "no such run folder or model file" in err[-1]


#: Each console script with a command line that fails deep inside it on a real bad input
#: (NAME files are made by the test: BAD_ONNX and BAD_DB hold text, DATA is a labelled
#: folder with no images, TREE a folder with one image), and what its one line says.
_FAILING = [
    ("aiscan.scanner.cli", ["TREE", "--out", "OUT.csv", "--model", "BAD_ONNX"], "cannot load"),
    (
        "aiscan.scanner.cli",
        ["TREE", "--out", "OUT.csv", "--model", "TINY", "--state", "BAD_DB"],
        "not a usable aiscan state database",
    ),
    (
        "aiscan.benchmarks.cli",
        ["--quick", "--model", "BAD_ONNX", "--results-dir", "RES"],
        "not an ONNX",
    ),
    ("aiscan.export.cli", ["--clip-head", "BAD_DB", "--out", "OUT.onnx"], "not a readable heads"),
    ("aiscan.train.cli", ["DATA", "--out", "RUN"], "no images found"),
    ("aiscan.train.eval_cli", ["BAD_ONNX", "DATA"], "no images found"),
    (
        "aiscan.train.protocol_cli",
        ["heads", "DATA", "--features", "F", "--out", "H.json"],
        "no images",
    ),
]


@pytest.mark.parametrize(("tool", "argv", "says"), _FAILING)
def test_every_console_script_turns_a_real_error_into_one_line_exit_2(
    tool: str,
    argv: list[str],
    says: str,
    timm_tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The one error contract, through each tool's real code path: the user sees
    ``TOOL: error: MESSAGE`` on one line and exit status 2, no traceback."""
    import importlib

    (tmp_path / "BAD_ONNX").write_text("not a model\n")
    (tmp_path / "BAD_DB").write_text("not a database\n")
    for label in ("ai", "real"):
        (tmp_path / "DATA" / label).mkdir(parents=True)
    (tmp_path / "TREE").mkdir()
    (tmp_path / "TREE" / "a.jpg").write_bytes(jpeg_bytes(photo(32, 32)))
    names = {"TINY": str(timm_tiny_model)}
    args = [names.get(a) or (str(tmp_path / a) if a[:1].isupper() else a) for a in argv]
    assert importlib.import_module(tool).main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0] and "Traceback" not in err[0], err
    assert says in err[0], err


def test_the_scanners_errors_are_aiscan_errors() -> None:
    from aiscan.model.errors import AiscanError
    from aiscan.model.meta import ModelError
    from aiscan.scanner.core.errors import ConfigError
    from aiscan.scanner.core.infer import DeviceError
    from aiscan.scanner.nightly.state import StateError
    from aiscan.scanner.output.formats import VerdictFileError
    from aiscan.scanner.output.lock import OutputLockedError
    from aiscan.scanner.output.writer import OutputExistsError

    for cls in (ModelError, ConfigError, DeviceError, OutputExistsError, OutputLockedError):
        assert issubclass(cls, AiscanError)
    assert issubclass(StateError, AiscanError) and issubclass(VerdictFileError, AiscanError)
