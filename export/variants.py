"""Reduced-precision variants of an exported model: fp16 and static int8 (QDQ).

Both keep float32 input and output and the fp32 model's metadata, plus
``aiscan.precision``; whether one is worth shipping is measured, not assumed (see
``aiscan-eval --model`` and ``aiscan-bench --model``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.meta import ModelInfo, read_info, write_info
from aiscan.model.pixels import load_pixels, normalize_batch
from aiscan.model.preprocessing import Preprocessing

VARIANTS = ("fp16", "int8")


def _info_with_precision(src: Path, precision: str) -> ModelInfo:
    info = read_info(src)
    extra = dict(info.extra, precision=precision)
    return ModelInfo(
        info.model_id + f"-{precision}",
        info.arch,
        info.preprocessing,
        info.labels,
        info.threshold,
        info.output,
        info.trained,
        extra,
    )


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Weights and activations in float16; input and output stay float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    info = _info_with_precision(src, "fp16")
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _topological_sort(model.graph)  # the converter appends its input casts at the end
    onnx.save(model, str(dst))
    write_info(dst, info)
    return dst


def _topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise UsageError(f"graph has a cycle or a missing input near {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


class _Calibration:
    """Feeds preprocessed calibration images to ONNX Runtime's calibrator."""

    def __init__(
        self, files: Sequence[str], spec: Preprocessing, input_name: str, batch: int = 16
    ) -> None:
        self._batches = self._make(files, spec, input_name, batch)

    @staticmethod
    def _make(
        files: Sequence[str], spec: Preprocessing, name: str, batch: int
    ) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(files), batch):
            pixels = [load_pixels(f, spec).pixels for f in files[start : start + batch]]
            yield {name: normalize_batch(pixels, spec)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - the calibrator reads once
        raise NotImplementedError


def quantize_int8(src: str | Path, dst: str | Path, calibration_files: Sequence[str]) -> Path:
    """Static int8 QDQ (per-channel weights, uint8 activations), calibrated on real images."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    info = _info_with_precision(src, "int8")
    input_name = onnx.load(str(src)).graph.input[0].name
    reader: Any = type("Reader", (_Calibration, CalibrationDataReader), {})(
        calibration_files, info.preprocessing, input_name
    )
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared))
        except Exception:  # ORT's symbolic shape inference raises a bare Exception
            # it gives up on some graphs (an ensemble's stacked outputs); ONNX's own shape
            # inference is enough for static quantization
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    write_info(dst, info)
    return dst
