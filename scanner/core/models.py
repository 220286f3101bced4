"""Which ONNX file a scan runs: a shipped model by name ("default", "fast") or a path; a
head model (CLIP features in, p_ai out) is first joined to its frozen encoder, which is
fetched once into the user cache."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import ConfigError

#: The models that ship inside the package, by the name ``--model`` takes: "default" is
#: the CLIP head (its encoder arrives once, into the user's cache, on first use); "fast"
#: the EfficientNet ensemble (whole, no download; several times faster on a CPU).
SHIPPED_MODELS = {"default": "clip-b16-head.onnx", "fast": "fast.onnx"}


DEFAULT_MODEL_NAME = SHIPPED_MODELS["default"]


def shipped_model(name: str = "default") -> Path | None:
    """The file of a model shipped inside the package (:data:`SHIPPED_MODELS`), or None
    when this build lacks it."""
    path = Path(str(resources.files("aiscan.scanner").joinpath("models", SHIPPED_MODELS[name])))
    return path if path.is_file() else None


def default_model_path() -> Path | None:
    """The shipped default model's file (a CLIP head), or None when this build has none."""
    return shipped_model("default")


def encoder_precision(encoder: dict[str, object]) -> str:
    """The encoder graph a head model runs with, on every device: the one its features
    came from (its metadata says which; heads from before that field were int8).

    The int8 graph's results depend on the CPU: ONNX Runtime's u8s8 kernels saturate
    where the CPU lacks VNNI (AVX2 only), so the same image gives other features there
    than on a VNNI CPU (the fp32 and int8 features agree to a cosine of 0.90-0.97 on a
    Xeon with VNNI, about 0.55 on an AVX2-only EPYC: ``tests/test_clip.py``). The fp32
    graph gives the same features on every CPU, ONNX Runtime version and GPU (fp32); the
    re-quantised "int8rr" graph comes closer than the wheel's int8 but still differs
    between CPU kinds (:func:`aiscan.model.clip_graph.requantise`)."""
    return str(encoder.get("precision", "int8"))


def model_file(model: str | os.PathLike[str] | None) -> Path:
    """The file a ``--model`` value names: a shipped model by name ("default" when None,
    "fast"), or the path given.

    Raises:
        ConfigError: no such file, or this build ships no such model.
    """
    text = "default" if model is None else os.fspath(model)
    if text in SHIPPED_MODELS:
        path = shipped_model(text)
        if path is None:
            raise ConfigError(
                f"this aiscan build ships no {text!r} model: pass --model PATH to an ONNX "
                "model made by aiscan-export"
            )
        return path
    path = Path(text)
    if not path.is_file():
        raise ConfigError(
            f"--model {path}: no such file (shipped models: {', '.join(SHIPPED_MODELS)})"
        )
    return path


def needs_encoder(path: Path) -> bool:
    """True when ``path`` is a head model, whose encoder must be in aiscan's cache."""
    from aiscan.model.clip_graph import head_encoder
    from aiscan.model.meta import ModelError, read_info

    if path.stat().st_size > 64 * 2**20:
        return False  # heads are small; a big file is a whole model (no full read here)
    try:
        return head_encoder(read_info(path).extra) is not None
    except (ModelError, OSError):
        return False  # the classifier says what is wrong with it, in its own words


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """The ONNX file to run: :func:`model_file`, where a head model (one that names an
    encoder) is first joined to its encoder (:func:`aiscan.model.clip_graph.assembled_model`,
    built once in aiscan's cache). Never touches the network: an encoder that is not in
    the cache is an :class:`EncoderUnavailableError` saying how to fetch it (the layers
    above fetch it first where they may: :mod:`aiscan.scanner.run.fetch`).

    Raises:
        ConfigError: no such file, this build ships no such model, or a head that does not
            fit the encoder.
        EncoderUnavailableError: the head's encoder is not in the cache.
        CacheError: the cache cannot be written.
    """
    path = model_file(model)
    if not needs_encoder(path):
        return path
    from aiscan.model.clip_graph import GraphError, assembled_model, head_encoder
    from aiscan.model.meta import read_info

    encoder = head_encoder(read_info(path).extra) or {}
    try:
        return assembled_model(path, encoder_precision(encoder), fetch=False)
    except GraphError as exc:
        raise ConfigError(f"--model {path}: {exc}") from exc
