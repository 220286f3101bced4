"""What an aiscan ONNX model says about itself, in its ``metadata_props``.

Export writes these keys (:func:`ModelInfo.to_metadata`); the scanner reads them
(:func:`ModelInfo.from_metadata`) and nowhere else takes preprocessing, labels or the
threshold from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiscan.scanner.preprocess import Preprocessing

PREFIX = "aiscan."
FORMAT_VERSION = "1"
POSITIVE_LABEL = "ai"
OUTPUTS = ("logits", "probabilities")


class ModelError(ValueError):
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
    """

    model_id: str
    arch: str
    preprocessing: Preprocessing
    labels: tuple[str, ...] = ("ai", "real")
    threshold: float = 0.5
    output: str = "logits"
    trained: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

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

    @property
    def positive_index(self) -> int:
        """Index of the AI-generated class in the model's output."""
        return self.labels.index(POSITIVE_LABEL)

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
        meta.update({k: json.dumps(v, sort_keys=True) for k, v in self.extra.items()})
        return {PREFIX + k: v for k, v in meta.items()}

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
        if meta.get("preprocessing_sha256", spec.sha256()) != spec.sha256():
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
            )
        except (ValueError, TypeError) as exc:
            raise ModelError(f"aiscan metadata is invalid: {exc}") from exc
