"""A fitted head (:class:`aiscan.train.heads.Head`) as a small ONNX model with aiscan's
metadata, and the pinned encoder it reads.

The head model takes the encoder's outputs (``cls_tokens`` [N, 12, 768] or
``image_embeds`` [N, 512]) and gives ``logits`` [N, 2] in aiscan's label order
(``ai``, ``real``): the AI logit and a zero, so that the scanner's softmax is the head's
sigmoid. Its ``aiscan.encoder`` metadata names the encoder (name, sha256, upstream
revision): :func:`aiscan.model.clip_graph.assemble` puts the two into one graph, and the
scanner does so on first use (see :func:`aiscan.scanner.core.models.resolve_model`). The head
file is small enough (a few MB) to ship inside the package; the encoder (90 MB) is not.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.clip import CLIP_B16, EncoderSource
from aiscan.model.clip_graph import CLS_TOKENS, EMBEDS, ENCODER_KEY
from aiscan.model.errors import UsageError
from aiscan.model.meta import ModelInfo
from aiscan.train.heads import Head, feature_blocks
from aiscan.train.protocol import Edge, Scored

#: Opset of the encoder graph the head joins (the int8 file's).
OPSET = 14
IR_VERSION = 7
_P = "aiscan_head/"


def encoder_metadata(source: EncoderSource = CLIP_B16, precision: str = "int8") -> dict[str, Any]:
    """What a head records of its encoder (``aiscan.encoder``), with the graph its
    features came from: the scanner joins the head to that graph, and no other."""
    return {
        "name": source.name,
        "sha256": source.sha256,
        "upstream": source.upstream,
        "package": source.requirement,
        "member": source.member,
        "precision": precision,
    }


def head_graph(head: Head, blocks: int = 12, width: int = 768) -> Any:
    """The ONNX model of ``head`` (no metadata yet)."""
    from onnx import TensorProto, helper, numpy_helper

    picked = feature_blocks(head.features, blocks)
    inits = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), _P + name))
        return _P + name

    nodes = []
    if picked is None:
        feature_in = helper.make_tensor_value_info(EMBEDS, TensorProto.FLOAT, ["N", len(head.mean)])
        x = EMBEDS
    else:
        feature_in = helper.make_tensor_value_info(
            CLS_TOKENS, TensorProto.FLOAT, ["N", blocks, width]
        )
        idx = const("blocks", np.array(picked, np.int64))
        shape = const("flat", np.array([0, len(picked) * width], np.int64))
        nodes += [
            helper.make_node("Gather", [CLS_TOKENS, idx], [_P + "picked"], axis=1),
            helper.make_node("Reshape", [_P + "picked", shape], [_P + "x"]),
        ]
        x = _P + "x"
    nodes += [
        helper.make_node("Sub", [x, const("mean", head.mean.astype(np.float32))], [_P + "c"]),
        helper.make_node(
            "Div", [_P + "c", const("scale", head.scale.astype(np.float32))], [_P + "z"]
        ),
    ]
    h = _P + "z"
    for i, (w, b) in enumerate(head.layers):
        mm, out = f"{_P}mm{i}", f"{_P}h{i}"
        nodes += [
            helper.make_node("MatMul", [h, const(f"w{i}", w.astype(np.float32))], [mm]),
            helper.make_node("Add", [mm, const(f"b{i}", b.astype(np.float32))], [out]),
        ]
        h = out
        if i < len(head.layers) - 1:
            nodes.append(helper.make_node("Relu", [h], [h + "_relu"]))
            h += "_relu"
    zero = const("zero", np.zeros((1, 1), np.float32))
    nodes += [
        helper.make_node("Mul", [h, zero], [_P + "zeros"]),
        helper.make_node("Concat", [h, _P + "zeros"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "aiscan_clip_head",
        [feature_in],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def write_head(
    head: Head, info: ModelInfo, out: str | Path, blocks: int = 12, width: int = 768
) -> Path:
    """Save ``head`` with ``info`` (its ``extra`` gains ``encoder``) to ``out``; ``blocks``
    and ``width`` are the encoder's (CLIP ViT-B/16: 12 blocks of 768)."""
    import onnx

    precision = str(info.extra.get("training", {}).get("encoder_precision", "int8"))
    encoder = encoder_metadata(precision=precision)
    full = dataclasses.replace(info, extra={**info.extra, ENCODER_KEY: encoder})
    model = head_graph(head, blocks, width)
    for key, value in full.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def bands(scored: Scored, fpr: float, miss: float) -> tuple[Edge, float]:
    """The verdict bands from held-out scores: the ``ai`` edge (at or above) flags at most
    ``fpr`` of the real images pooled and at most twice that of any real kind
    (:func:`aiscan.train.protocol.band_edge`); ``real_below`` ("real" below) lets at most
    ``miss`` of the AI images fall under it (never above the ``ai`` edge)."""
    from aiscan.train.protocol import band_edge

    if not 0 < fpr < 1 or not 0 <= miss < 1:
        raise UsageError(f"fpr must be within (0, 1) and miss within [0, 1), got {fpr}, {miss}")
    edge = band_edge(scored, fpr)
    ok = np.isfinite(scored.p_ai)
    ai = np.sort(scored.p_ai[ok & scored.is_ai])
    below = float(ai[int(np.floor(miss * len(ai)))]) if len(ai) else edge.threshold
    return edge, min(below, edge.threshold)


def export_clip_head(
    report_path: str | Path,
    out: str | Path,
    model_id: str = "aiscan-clip-v1",
    fpr: float = 0.05,
    miss: float = 0.10,
    levers: list[dict[str, Any]] | None = None,
) -> ModelInfo:
    """Fit the head an ``aiscan-protocol heads`` report describes on all its training
    images (every view it names), take its bands from the report's held-out scores
    (:func:`bands`), and write it with its protocol figures in the metadata (``levers``:
    the lever table of its model card, as ``train/recipes/levers.py`` writes it)."""
    import json

    from aiscan.train.data import find_samples
    from aiscan.train.features import features_preprocessing
    from aiscan.train.heads import HeadConfig, fit_head, left_out_mask, load_views, training_rows
    from aiscan.train.protocol import edge_by_fold, load_scored, operating_point, summarize

    report_path = Path(report_path)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{report_path}: not a readable heads report ({exc})") from exc
    if not isinstance(report, dict) or "config" not in report or "operating_points" not in report:
        raise UsageError(f"{report_path} is not an aiscan-protocol heads report")
    raw = report["config"]
    config = HeadConfig(**dict(raw, views=tuple(raw["views"]), also=tuple(raw.get("also", ()))))
    samples = find_samples(report["data_dirs"])
    cache = Path(report["features_cache"])
    views = load_views(cache, samples, config)
    left_out = report.get("score_only_sources", [])
    trainable = left_out_mask(samples, left_out)
    head = fit_head(*training_rows(samples, views, config, trainable), config)
    scored = load_scored(report_path.with_suffix(".scores.csv"))
    edge, real_below = bands(scored, fpr, miss)
    threshold = edge.threshold
    at_threshold = summarize(scored, threshold)  # per source, right at the shipped edge
    summary = {k: v for k, v in report["summary"].items() if k not in ("per_source", "per_fold")}
    groups = report.get("groups", "source")
    protocol = "leave one source out" if groups == "source" else f"{groups} source-grouped folds"
    info = ModelInfo(
        model_id=model_id,
        arch=f"clip-vit-b16+{config.head}({config.features})",
        preprocessing=features_preprocessing(cache),
        threshold=threshold,
        real_below=real_below,
        extra={
            "head": dataclasses.asdict(config),
            "training": {
                "data_dirs": [Path(d).name for d in report["data_dirs"]],
                "images": int((views["base"].ok & trainable).sum()),
                "sources": len({s.source for s, k in zip(samples, trainable, strict=True) if k}),
                "left_out_sources": sorted(left_out),
                # reports from before the field existed were all int8
                "encoder_precision": report.get("features_precision", "int8"),
            },
            "generalisation": dict(summary, protocol=protocol, report=report_path.name),
            "bands": {
                "rule": f"{edge.rule}; real: held-out AI miss rate {miss:g}",
                "promise": fpr,
                "pooled_edge": edge.pooled,
                "raised_by": edge.binding,
                "at_threshold": operating_point(scored, threshold),
                "at_real_below": operating_point(scored, real_below),
                "edge_by_fold": edge_by_fold(scored, fpr),
            },
            **({"levers": levers} if levers else {}),
            "per_source": at_threshold["per_source"],
            "per_fold": at_threshold["per_fold"],
        },
    )
    write_head(head, info, out)
    return info
