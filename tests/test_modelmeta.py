from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiscan.model.meta import ModelError, ModelInfo
from aiscan.model.preprocessing import Preprocessing


def _info(**kw: object) -> ModelInfo:
    base: dict[str, object] = {
        "model_id": "m",
        "arch": "efficientnet_b0",
        "preprocessing": Preprocessing(),
    }
    base.update(kw)
    return ModelInfo(**base)  # type: ignore[arg-type]


def test_round_trip_through_metadata() -> None:
    info = _info(threshold=0.37, trained=False, extra={"metrics": {"auc": 0.9}})
    props = info.to_metadata()
    assert all(k.startswith("aiscan.") for k in props)
    assert ModelInfo.from_metadata(props) == info


def test_label_mapping_is_explicit() -> None:
    # The report labels AI as 0 ("positive") and real as 1: AI stays the positive class,
    # whatever its index in the output.
    assert _info(labels=("ai", "real")).positive_index == 0
    assert _info(labels=("real", "ai")).positive_index == 1
    with pytest.raises(ModelError, match="positive class"):
        _info(labels=("fake", "real"))


def test_missing_or_edited_metadata_is_refused() -> None:
    with pytest.raises(ModelError, match="no aiscan metadata"):
        ModelInfo.from_metadata({"producer": "x"})
    props = _info().to_metadata()
    edited = dict(props)
    spec = json.loads(edited["aiscan.preprocessing"])
    spec["mean"] = [0.4, 0.4, 0.4]
    edited["aiscan.preprocessing"] = json.dumps(spec)
    with pytest.raises(ModelError, match="does not match"):
        ModelInfo.from_metadata(edited)
    newer = dict(props, **{"aiscan.format_version": "9"})
    with pytest.raises(ModelError, match="format"):
        ModelInfo.from_metadata(newer)
    broken = dict(props, **{"aiscan.threshold": "high"})
    with pytest.raises(ModelError, match="invalid"):
        ModelInfo.from_metadata(broken)


def test_p_ai_from_logits_or_probabilities_whatever_the_label_order() -> None:
    from aiscan.model.meta import p_ai

    logits = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 3.0]], np.float32)
    expect = 1 / (1 + np.exp(-(logits[:, 0] - logits[:, 1])))
    np.testing.assert_allclose(p_ai(logits), expect, rtol=1e-6)
    np.testing.assert_allclose(p_ai(logits[:, ::-1], ("real", "ai")), expect, rtol=1e-6)
    probs = np.array([[0.7, 0.3], [0.1, 0.9]], np.float32)
    np.testing.assert_allclose(p_ai(probs, output="probabilities"), [0.7, 0.1])
    info = ModelInfo("m", "a", Preprocessing(), labels=("real", "ai"), output="probabilities")
    np.testing.assert_allclose(info.p_ai(probs), [0.3, 0.9])
    with pytest.raises(ModelError, match="3 labels"):
        p_ai(probs, ("ai", "real", "other"))
    with pytest.raises(ModelError, match="output must be"):
        p_ai(probs, output="odds")


def test_read_info_reads_the_file_without_a_session(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.model.meta import read_info
    from aiscan.scanner.core.infer import Classifier

    assert read_info(tiny_model) == Classifier(tiny_model, "cpu").info
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xff not a protobuf" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        read_info(junk)
    with pytest.raises(OSError):
        read_info(tmp_path / "missing.onnx")


def test_models_written_with_version_1_of_the_definition_still_load() -> None:
    """Every model exported before the decode mode joined the definition (the shipped
    default among them) keeps loading, read as draft decoding; its stored hash is checked
    against its stored text, and a hand edit is still refused."""
    from aiscan.model.meta import read_info
    from aiscan.scanner.core.models import shipped_model
    from tests.test_preprocess import V1_DEFAULT

    props = _info().to_metadata()
    old = dict(props)
    old["aiscan.preprocessing"] = V1_DEFAULT
    old["aiscan.preprocessing_sha256"] = (
        "9a53fef266d65101d72ddac5a9accfcb7a5946ee349a6478f9995111623297a4"  # as stored then
    )
    assert ModelInfo.from_metadata(old).preprocessing == Preprocessing(decode="draft")
    old["aiscan.preprocessing"] = V1_DEFAULT.replace("[0.5,", "[0.4,", 1)
    with pytest.raises(ModelError, match="does not match"):
        ModelInfo.from_metadata(old)
    shipped = shipped_model("fast")
    assert shipped is not None
    assert read_info(shipped).preprocessing.decode == "draft"
