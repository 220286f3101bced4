from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiscan.model.meta import ModelError
from aiscan.scanner.core import infer as infer_mod
from aiscan.scanner.core.infer import Classifier, DeviceError, cuda_device_count, provider_plan

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _names(plan: list[tuple[str, dict[str, str]]]) -> list[str]:
    return [p for p, _ in plan]


def test_auto_without_gpu_asks_only_for_cpu() -> None:
    plan = provider_plan("auto", ALL, cuda_devices=0, tensorrt_loadable=True)
    assert _names(plan) == ["CPUExecutionProvider"]


def test_auto_with_gpu_prefers_tensorrt_then_cuda() -> None:
    assert _names(provider_plan("auto", ALL, cuda_devices=1, tensorrt_loadable=True)) == ALL
    assert _names(provider_plan("auto", ALL, cuda_devices=1, tensorrt_loadable=False)) == ALL[1:]


def test_tensorrt_options_enable_fp16_and_engine_cache(tmp_path: Path) -> None:
    plan = provider_plan(
        "tensorrt", ALL, cuda_devices=1, tensorrt_loadable=True, trt_cache_dir=str(tmp_path)
    )
    opts = dict(plan)["TensorrtExecutionProvider"]
    assert opts["trt_fp16_enable"] == "True" and opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path)


def test_tensorrt_profile_covers_every_batch_size() -> None:
    plan = provider_plan(
        "tensorrt", ALL, cuda_devices=1, tensorrt_loadable=True, trt_profile=("input", 224, 224)
    )
    opts = dict(plan)["TensorrtExecutionProvider"]
    assert opts["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert opts["trt_profile_opt_shapes"] == "input:128x3x224x224"
    assert opts["trt_profile_max_shapes"] == "input:512x3x224x224"


def test_explicit_device_missing_from_build_is_an_error() -> None:
    with pytest.raises(DeviceError, match="CUDAExecutionProvider"):
        provider_plan("cuda", ["CPUExecutionProvider"], cuda_devices=1, tensorrt_loadable=True)
    with pytest.raises(ValueError, match="device must be one of"):
        provider_plan("gpu", ALL, cuda_devices=1, tensorrt_loadable=True)


def test_cpu_session_reports_what_runs(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clf = Classifier(tiny_model, "cpu", threads=1)
    assert clf.report.providers == ("CPUExecutionProvider",)
    assert clf.model_label.startswith("tiny-test@")
    monkeypatch.setattr(infer_mod, "cuda_device_count", lambda: 0)
    auto = Classifier(tiny_model, "auto", threads=1)
    assert auto.report.providers == ("CPUExecutionProvider",)
    assert auto.report.note == "auto: running on CPUExecutionProvider (no usable CUDA device found)"


@pytest.mark.gpu
def test_auto_on_a_gpu_runs_there_and_says_so(tiny_model: Path) -> None:
    auto = Classifier(tiny_model, "auto", threads=1)
    ran = auto.report.providers[0]
    assert ran in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    # TensorRT may have been asked for and not be usable: the note says so
    assert auto.report.note.startswith(f"auto: running on {ran}")


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_explicit_gpu_request_on_cpu_machine_fails_loudly(
    tiny_model: Path, device: str, capfd: pytest.CaptureFixture
) -> None:
    with pytest.raises(DeviceError, match=f"--device {device}"):
        Classifier(tiny_model, device, threads=1)
    # ONNX Runtime's own coloured log lines are held back: aiscan's message quotes them
    assert "onnxruntime" not in capfd.readouterr().err


def test_predict_any_batch_size_matches_pytorch(timm_tiny_model: Path) -> None:
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)  # the fixture's seed: the same weights
    ref = timm.create_model("test_efficientnet", num_classes=2, pretrained=False).eval()
    clf = Classifier(timm_tiny_model, "cpu", threads=1)
    x = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expect = torch.softmax(ref(torch.from_numpy(x)), dim=1)[:, 0].numpy()
    np.testing.assert_allclose(clf.predict(x), expect, atol=1e-5)
    np.testing.assert_allclose(clf.predict(x[:1]), expect[:1], atol=1e-5)


def test_model_without_metadata_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelError, match="no aiscan metadata"):
        Classifier(bare, "cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        Classifier(junk, "cpu")


def _parity_batch(model: Path) -> np.ndarray:
    h, w = Classifier(model, "cpu").info.preprocessing.input_size
    return np.random.default_rng(1).normal(size=(8, 3, h, w)).astype(np.float32)


@pytest.mark.gpu
def test_cuda_matches_cpu(gpu_model: Path) -> None:
    x = _parity_batch(gpu_model)
    cuda = Classifier(gpu_model, "cuda")
    assert cuda.report.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(cuda.predict(x), Classifier(gpu_model, "cpu").predict(x), atol=1e-3)


@pytest.mark.gpu
def test_tensorrt_fp16_with_engine_cache_matches_cpu(gpu_model: Path, tmp_path: Path) -> None:
    from aiscan.scanner.core.infer import _tensorrt_loadable

    if not _tensorrt_loadable():
        pytest.skip("TensorRT libraries are not installed here")
    x = _parity_batch(gpu_model)
    trt = Classifier(gpu_model, "tensorrt", trt_cache_dir=str(tmp_path))
    assert trt.report.providers[0] == "TensorrtExecutionProvider"
    np.testing.assert_allclose(trt.predict(x), Classifier(gpu_model, "cpu").predict(x), atol=2e-2)
    assert any(tmp_path.iterdir()), "no engine was cached"


def test_shipped_fast_model_is_trained_and_complete() -> None:
    from aiscan.scanner.core.models import shipped_model

    path = shipped_model("fast")
    if path is None:
        pytest.skip("this build ships no fast model")
    assert path.stat().st_size < 25 * 2**20
    clf = Classifier(path, "cpu", threads=1)
    info = clf.info
    assert info.trained and info.labels == ("ai", "real") and 0 < info.threshold < 1
    assert info.preprocessing.input_size == (224, 224)
    assert {"training", "validation", "parity", "test_metrics", "generalisation"} <= set(info.extra)
    # two different inputs get two different p_ai, each independent of its batch-mate
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    p = clf.predict(x)
    assert p.shape == (2,) and p[0] != p[1]
    assert np.allclose(p, clf.predict(x[::-1])[::-1], atol=1e-6)  # per image, not per batch
