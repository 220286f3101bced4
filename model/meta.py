"""What an aiscan ONNX model says about itself, in its ``metadata_props``, and what its
output means.

Export writes these keys (:func:`write_info`, :func:`ModelInfo.to_metadata`); the scanner
and every other tool read them (:func:`read_info`, :func:`ModelInfo.from_metadata`) and
take preprocessing, labels or the threshold from nowhere else. :func:`p_ai` is the one
way from a model's output to the probability that an image is AI-generated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AiscanError
from .preprocessing import Preprocessing

PREFIX = "aiscan."
FORMAT_VERSION = "1"
#: Class names in the output order of every model aiscan trains (AI first, as in the
#: report); a model's own order is its metadata's ``labels``.
LABELS = ("ai", "real")
POSITIVE_LABEL = "ai"
OUTPUTS = ("logits", "probabilities")
#: The verdicts a row can carry: "uncertain" only where a model (or the user) sets a band
#: below its threshold (:attr:`ModelInfo.real_below`).
VERDICTS = ("ai", "uncertain", "real")


#: Decimal places of a band edge: every edge is used, recorded and compared rounded to
#: these, so that an edge read back from a summary or typed from one is the same edge.
EDGE_DECIMALS = 6


def canonical_edge(edge: float) -> float:
    """``edge`` in the one form aiscan uses, records and compares (:data:`EDGE_DECIMALS`
    places: ``0.8157630000000001`` is ``0.815763``)."""
    return round(float(edge), EDGE_DECIMALS) + 0.0  # + 0.0: never -0.0


def band_label(threshold: float, real_below: float | None, evidence_policy: str) -> str:
    """What judged a row, beside its model: the ``ai`` edge, the ``real`` edge (the
    ``ai`` edge when there is no band) and the evidence policy, in canonical form, e.g.
    ``ai>=0.815763 real<0.0798 evidence=report``. Rows whose labels differ were judged
    differently and are never combined silently."""
    ai = canonical_edge(threshold)
    real = ai if real_below is None else min(canonical_edge(real_below), ai)
    return f"ai>={ai:g} real<{real:g} evidence={evidence_policy}"


def verdict(p: float, threshold: float, real_below: float | None = None) -> str:
    """ "ai" at or above ``threshold``; "real" below ``real_below`` (default: the
    threshold, so no band); "uncertain" between."""
    if p >= threshold:
        return "ai"
    return "real" if p < (threshold if real_below is None else real_below) else "uncertain"


def p_ai(out: np.ndarray, labels: Sequence[str] = LABELS, output: str = "logits") -> np.ndarray:
    """Probability of the AI class for each row of a (batch, classes) model output.

    Args:
        out: the model's output, one row per image.
        labels: class names in output order (must contain :data:`POSITIVE_LABEL`).
        output: "logits" (a softmax is applied) or "probabilities" (used as they are).
    """
    out = np.asarray(out, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != len(labels):
        raise ModelError(
            f"model output has shape {list(out.shape)}; its metadata names {len(labels)} labels"
        )
    if output == "logits":
        out = out - out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
    elif output != "probabilities":
        raise ModelError(f"output must be one of {OUTPUTS}, got {output!r}")
    result: np.ndarray = out[:, list(labels).index(POSITIVE_LABEL)]
    return result


class ModelError(AiscanError, ValueError):
    """The model file cannot be used by aiscan; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """The model's own description of itself.

    Attributes:
        model_id: a short human name, e.g. "aiscan-effb0-trainv1".
        arch: the timm architecture it was built from.
        preprocessing: how an image becomes its input.
        labels: class names in output order; must contain "ai".
        threshold: p_ai at or above which the verdict is "ai".
        output: "logits" (softmax applied by the scanner) or "probabilities".
        trained: False for models exported with random weights (benchmarks, tests).
        extra: any further JSON-valued metadata (training summary, metrics...).
        real_below: p_ai below which the verdict is "real"; between it and ``threshold``
            the verdict is "uncertain". None: no band (every verdict "ai" or "real").
    """

    model_id: str
    arch: str
    preprocessing: Preprocessing
    labels: tuple[str, ...] = LABELS
    threshold: float = 0.5
    output: str = "logits"
    trained: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    real_below: float | None = None

    def __post_init__(self) -> None:
        if POSITIVE_LABEL not in self.labels:
            raise ModelError(
                f"labels {list(self.labels)} lack the positive class {POSITIVE_LABEL!r}"
            )
        if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
            raise ModelError(f"labels must be 2 or more distinct names, got {list(self.labels)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ModelError(f"threshold must be within [0, 1], got {self.threshold}")
        if self.output not in OUTPUTS:
            raise ModelError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.real_below is not None and not 0.0 <= self.real_below <= self.threshold:
            raise ModelError(
                f"real_below must be within [0, threshold={self.threshold}], got {self.real_below}"
            )

    @property
    def positive_index(self) -> int:
        """Index of the AI-generated class in the model's output."""
        return self.labels.index(POSITIVE_LABEL)

    def p_ai(self, out: np.ndarray) -> np.ndarray:
        """:func:`p_ai` of this model's raw output."""
        return p_ai(out, self.labels, self.output)

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries that describe this model."""
        meta = {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "arch": self.arch,
            "preprocessing": self.preprocessing.to_json(),
            "preprocessing_sha256": self.preprocessing.sha256(),
            "labels": json.dumps(list(self.labels)),
            "positive_label": POSITIVE_LABEL,
            "threshold": repr(float(self.threshold)),
            "output": self.output,
            "trained": "true" if self.trained else "false",
        }
        if self.real_below is not None:
            meta["real_below"] = repr(float(self.real_below))
        meta.update({k: json.dumps(v, sort_keys=True) for k, v in self.extra.items()})
        return {PREFIX + k: v for k, v in meta.items()}

    @classmethod
    def from_onnx(cls, model: Any) -> ModelInfo:
        """The info of a loaded ``onnx.ModelProto`` (see :meth:`from_metadata`)."""
        return cls.from_metadata({p.key: p.value for p in model.metadata_props})

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelInfo:
        """Parse and check ``metadata_props``; raise :class:`ModelError` on any problem."""
        meta = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not meta:
            raise ModelError(
                "the model has no aiscan metadata (aiscan.* keys); export it with aiscan-export "
                "so that its preprocessing, labels and threshold travel with it"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"aiscan metadata format {meta.get('format_version')!r} is not supported "
                f"(this aiscan reads format {FORMAT_VERSION!r})"
            )
        missing = [k for k in ("model_id", "arch", "preprocessing", "labels") if k not in meta]
        if missing:
            raise ModelError(f"aiscan metadata lacks {', '.join(PREFIX + k for k in missing)}")
        try:
            spec = Preprocessing.from_json(meta["preprocessing"])
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"aiscan.preprocessing is invalid: {exc}") from exc
        # The hash covers the stored text: a model written with an earlier definition
        # version keeps its own hash, while ``spec`` reads as the current version.
        stored = hashlib.sha256(meta["preprocessing"].encode()).hexdigest()
        if meta.get("preprocessing_sha256", stored) != stored:
            raise ModelError(
                "aiscan.preprocessing_sha256 does not match aiscan.preprocessing: "
                "the metadata was edited by hand or corrupted"
            )
        known = {
            "format_version",
            "model_id",
            "arch",
            "preprocessing",
            "preprocessing_sha256",
            "labels",
            "positive_label",
            "threshold",
            "output",
            "trained",
            "real_below",
        }
        try:
            extra = {k: json.loads(v) for k, v in meta.items() if k not in known}
            return cls(
                model_id=meta["model_id"],
                arch=meta["arch"],
                preprocessing=spec,
                labels=tuple(json.loads(meta["labels"])),
                threshold=float(meta.get("threshold", "0.5")),
                output=meta.get("output", "logits"),
                trained=meta.get("trained", "true") == "true",
                extra=extra,
                real_below=float(meta["real_below"]) if "real_below" in meta else None,
            )
        except (ValueError, TypeError) as exc:
            raise ModelError(f"aiscan metadata is invalid: {exc}") from exc


def read_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of an ONNX file, read with ``onnx`` (no inference session).

    Raises:
        ModelError: not an ONNX model, or its aiscan metadata is missing or invalid.
        OSError: the file cannot be read.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError:
        raise
    except Exception as exc:  # protobuf's DecodeError, and onnx's own errors
        raise ModelError(f"{path} is not an ONNX model: {exc}") from exc
    return ModelInfo.from_onnx(model)


def write_info(path: str | Path, info: ModelInfo) -> None:
    """Replace the aiscan entries of an ONNX file's ``metadata_props`` with ``info``'s."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in info.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
