"""Export: metadata written once and read back, reduced-precision variants that load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from aiscan.scanner.core.infer import Classifier
from tests.conftest import jpeg_bytes, photo

onnx = pytest.importorskip("onnx")


def test_write_metadata_replaces_only_aiscan_keys(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.model.meta import write_info

    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_model.read_bytes())
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


def test_fp16_and_int8_variants_keep_metadata_and_run(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.export.variants import convert_fp16, quantize_int8
    from aiscan.model.pixels import load_pixels, normalize_batch

    files = _calibration(tmp_path)
    fp16 = convert_fp16(tiny_model, tmp_path / "m.fp16.onnx")
    int8 = quantize_int8(tiny_model, tmp_path / "m.int8.onnx", files)
    base = Classifier(tiny_model, "cpu")
    spec = base.info.preprocessing
    x = normalize_batch([load_pixels(f, spec).pixels for f in files], spec)
    ref = base.predict(x)
    for path, precision in ((fp16, "fp16"), (int8, "int8")):
        clf = Classifier(path, "cpu")
        assert clf.info.extra["precision"] == precision
        assert clf.info.preprocessing == spec and clf.info.threshold == base.info.threshold
        p = clf.predict(x)
        assert p.shape == ref.shape and np.isfinite(p).all()
    np.testing.assert_allclose(Classifier(fp16, "cpu").predict(x), ref, atol=2e-2)
    assert fp16.stat().st_size < tiny_model.stat().st_size


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


@pytest.mark.parametrize(
    "tool",
    [
        "aiscan.scanner.cli",
        "aiscan.benchmarks.cli",
        "aiscan.export.cli",
        "aiscan.train.cli",
        "aiscan.train.eval_cli",
        "aiscan.train.protocol_cli",
    ],
)
def test_every_console_script_turns_an_aiscan_error_into_one_line_exit_2(
    tool: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one error contract: whatever raises an AiscanError below a tool's main, the
    user sees ``TOOL: error: MESSAGE`` on one line and exit status 2, no traceback."""
    import importlib

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
    module = importlib.import_module(tool)

    def fail(_argv: object = None) -> int:
        raise StateError("the state database is locked by another run\nsecond line")

    monkeypatch.setattr(module, "_main", fail)
    assert module.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: the state database is locked by another run" in err[0]
