from __future__ import annotations

import json

import pytest

from aiscan.scanner.modelmeta import ModelError, ModelInfo
from aiscan.scanner.preprocess import Preprocessing


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
