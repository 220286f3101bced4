"""How an image file becomes the model's input, as a definition: the :class:`Preprocessing`
that export writes into a model's metadata and that training, the CPU decoder and the DALI
decoder all follow. The pixel code lives in :mod:`aiscan.model.pixels`; this module
holds only the definition, so that it imports nothing heavier than the standard library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

PREPROCESS_VERSION = "aiscan-preprocess/3"
#: Earlier definitions this aiscan still reads (:meth:`Preprocessing.from_json`).
READABLE_VERSIONS = ("aiscan-preprocess/1", "aiscan-preprocess/2", PREPROCESS_VERSION)
RESIZE_POLICIES = ("squash", "crop")
#: How a JPEG is decoded before the resize: "draft" lets libjpeg decode at a reduced DCT
#: scale (1/2, 1/4 or 1/8), never below the model input size; "full" decodes every pixel.
DECODE_MODES = ("draft", "full")
#: Resize filters (Pillow's, antialiased when shrinking), by name.
INTERPOLATION_NAMES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects: written by export, read by the scanner.

    Attributes:
        input_size: (height, width) of the model input.
        mean: per-channel mean, applied after scaling pixels to [0, 1].
        std: per-channel standard deviation.
        resize: "squash" resizes the whole image to ``input_size`` ignoring aspect (the
            report's recipe: a non-square image is stretched); "crop" keeps the aspect: the
            largest centred region of the input's aspect is resized to ``input_size``
            (for a square input, the centred square of side min(width, height)).
        interpolation: Pillow filter used for the resize, antialiased when shrinking.
        background: grey level that transparent pixels are composited on.
        decode: how JPEGs are decoded, one of :data:`DECODE_MODES`: part of the
            definition, because the two give pixels a few levels apart and a model
            learns from the pixels it is trained on.
        canonical_size: 0 for none; N > 0 puts every image into one pixel regime before
            the resize policy: shrunk to fit N x N (Pillow's ``thumbnail``: Lanczos,
            aspect kept, never enlarged), then JPEG-encoded at ``canonical_quality`` and
            decoded again. A model whose training images were all such copies (train-v1/v2
            are 256 px JPEG q85 copies) then sees the same regime in every file a user
            sends, whatever its size and format (:func:`aiscan.model.pixels.canonicalise`).
        canonical_quality: the JPEG quality (1..100) of the canonical step; 0 exactly
            when ``canonical_size`` is 0.
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "squash"
    interpolation: str = "bilinear"
    background: int = 255
    decode: str = "draft"
    canonical_size: int = 0
    canonical_quality: int = 0
    version: str = field(default=PREPROCESS_VERSION)

    def __post_init__(self) -> None:
        h, w = self.input_size
        if not (16 <= h <= 4096 and 16 <= w <= 4096):
            raise ValueError(f"input_size must be within 16..4096 pixels, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need exactly 3 values (RGB)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATION_NAMES:
            raise ValueError(
                f"interpolation must be one of {list(INTERPOLATION_NAMES)}, "
                f"got {self.interpolation!r}"
            )
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}")
        if self.canonical_size < 0 or (0 < self.canonical_size < 16):
            raise ValueError(f"canonical_size must be 0 or at least 16, got {self.canonical_size}")
        if (self.canonical_size == 0) != (self.canonical_quality == 0) or not (
            0 <= self.canonical_quality <= 100
        ):
            raise ValueError(
                "canonical_quality must be a JPEG quality 1..100 with a canonical_size, "
                f"0 without one (got size {self.canonical_size}, "
                f"quality {self.canonical_quality})"
            )
        if not 0 <= self.background <= 255:
            raise ValueError(f"background must be a grey level 0..255, got {self.background}")
        if self.version != PREPROCESS_VERSION:
            raise ValueError(
                f"preprocessing version {self.version!r} is not supported by this aiscan "
                f"(it knows {PREPROCESS_VERSION!r})"
            )

    def to_json(self) -> str:
        """Canonical JSON: the same definition always gives the same text (and hash)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def canonical(self) -> bool:
        """True when the definition has a canonical step (``canonical_size`` > 0)."""
        return self.canonical_size > 0

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        """Parse a definition; earlier versions are read as the same definition in this
        one: version 1 had no decode mode (everything then trained and scanned with
        "draft"), versions 1 and 2 no canonical step."""
        raw: dict[str, Any] = json.loads(text)
        if raw.get("version") not in READABLE_VERSIONS:
            raise ValueError(
                f"preprocessing version {raw.get('version')!r} is not supported by this "
                f"aiscan (it reads {', '.join(map(repr, READABLE_VERSIONS))})"
            )
        if raw["version"] == "aiscan-preprocess/1":
            if "decode" in raw:
                raise ValueError("aiscan-preprocess/1 has no decode field")
            raw["version"], raw["decode"] = "aiscan-preprocess/2", "draft"
        if raw["version"] == "aiscan-preprocess/2":
            if "canonical_size" in raw or "canonical_quality" in raw:
                raise ValueError("aiscan-preprocess/2 has no canonical step")
            raw["version"] = PREPROCESS_VERSION
        raw["input_size"] = tuple(raw["input_size"])
        raw["mean"] = tuple(float(v) for v in raw["mean"])
        raw["std"] = tuple(float(v) for v in raw["std"])
        return cls(**raw)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()
