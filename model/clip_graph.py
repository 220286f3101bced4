"""Graph surgery on the CLIP ViT-B/16 image tower that aiscan builds on.

The encoder arrives as a dynamically quantised int8 ONNX graph (``MatMulInteger`` +
``DynamicQuantizeLinear``: see :mod:`aiscan.model.clip`). Neither CUDA nor TensorRT
runs that pattern well, and it quantises activations at run time, so aiscan rewrites it:

- :func:`dequantise` turns every ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul``
  chain into one float ``MatMul`` whose weight is the stored int8 matrix dequantised
  (``(q - zero_point) * scale``, per output column). The weights keep exactly the values
  the int8 file holds; only the activations are no longer rounded to 8 bits.
- :func:`expose_cls_tokens` adds a graph output ``cls_tokens`` [N, L, 768]: the class
  token after each transformer block (RINE, Koutlis & Papadopoulos ECCV 2024: the
  intermediate blocks carry forensic signal the last one loses).

Pure ``onnx`` + ``numpy``: no torch, no inference session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .files import replacing

#: The version of what this module does to the pinned encoder (rewrite, outputs,
#: requantisation, assembly): part of every cached graph's name, so that a change here
#: is never served from an old build. Raise it with any change to the graphs' bytes.
#: 3: the dynamically quantised graphs ("int8rr", "int8mix") take one image per run.
GRAPH_VERSION = 3
#: Output names of the rewritten encoder, in graph order.
EMBEDS = "image_embeds"
CLS_TOKENS = "cls_tokens"
#: The residual stream after transformer block N: ``.../layers.N/Add_1_output_0``.
_BLOCK_OUT = re.compile(r"/encoder/layers\.(\d+)/Add_1$")


class GraphError(ValueError):
    """The graph is not the one this module knows how to rewrite."""


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            out[name].append(node)
    return out


def _only(nodes: list[Any], op: str, where: str) -> Any:
    if len(nodes) != 1 or nodes[0].op_type != op:
        found = [n.op_type for n in nodes]
        raise GraphError(f"{where}: expected one {op} consumer, found {found}")
    return nodes[0]


def dequantise(model: Any) -> Any:
    """A float32 copy of a dynamically quantised graph (see the module docstring).

    Raises:
        GraphError: a ``MatMulInteger`` outside the pattern that onnxruntime's
            ``quantize_dynamic`` writes, or no ``MatMulInteger`` at all.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    drop: set[int] = set()
    replace: dict[int, Any] = {}
    new_inits = []
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        a_q, b_q, _, b_zp = node.input
        dql = producer.get(a_q)
        if dql is None or dql.op_type != "DynamicQuantizeLinear" or b_q not in inits:
            raise GraphError(f"{node.name}: not a dynamic-quantised MatMul")
        cast = _only(consumers[node.output[0]], "Cast", node.name)
        mul = _only(consumers[cast.output[0]], "Mul", cast.name)
        scales = producer[mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]]
        w_scale = next(i for i in scales.input if i in inits)
        q = numpy_helper.to_array(inits[b_q]).astype(np.float32)
        zp = numpy_helper.to_array(inits[b_zp]).astype(np.float32)
        scale = numpy_helper.to_array(inits[w_scale]).astype(np.float32)
        weight = ((q - zp) * scale).astype(np.float32)
        name = b_q.removesuffix("_quantized") + "_dequantised"
        new_inits.append(numpy_helper.from_array(weight, name))
        matmul = helper.make_node(
            "MatMul", [dql.input[0], name], [mul.output[0]], name=node.name.removesuffix("_quant")
        )
        drop.update({id(node), id(cast)})
        replace[id(mul)] = matmul
    if not replace:
        raise GraphError("the graph holds no MatMulInteger: nothing to dequantise")
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    _prune(model)
    return model


def _prune(model: Any) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    needed: set[str] = set()
    stack = [o.name for o in graph.output]
    keep: set[int] = set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if id(n) in keep]
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def block_outputs(model: Any) -> list[str]:
    """The residual stream's name after each transformer block, in block order."""
    found = {}
    for node in model.graph.node:
        hit = _BLOCK_OUT.search(node.name)
        if hit and node.op_type == "Add":
            found[int(hit.group(1))] = node.output[0]
    if not found or sorted(found) != list(range(len(found))):
        raise GraphError(f"transformer blocks not found in order (found {sorted(found)})")
    return [found[i] for i in range(len(found))]


def expose_cls_tokens(model: Any) -> Any:
    """A copy of ``model`` with a ``cls_tokens`` output [N, blocks, width] (see above);
    the other outputs but ``image_embeds`` are dropped."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    blocks = block_outputs(model)
    zero = helper.make_tensor("cls_index", TensorProto.INT64, [1], [0])
    graph.initializer.append(zero)
    picked = []
    for i, name in enumerate(blocks):
        out = f"/aiscan/cls_{i}"
        # Gather index [0] on the token axis keeps it: [N, 1, width].
        graph.node.append(helper.make_node("Gather", [name, "cls_index"], [out], axis=1))
        picked.append(out)
    graph.node.append(helper.make_node("Concat", picked, [CLS_TOKENS], axis=1))
    keep = [o for o in graph.output if o.name == EMBEDS]
    if not keep:
        raise GraphError(f"the encoder has no {EMBEDS!r} output")
    del graph.output[:]
    graph.output.extend(keep)
    width = _width(model)
    graph.output.append(
        helper.make_tensor_value_info(
            CLS_TOKENS,
            TensorProto.FLOAT,
            [_batch_dim(keep[0]), len(blocks), width],
        )
    )
    _prune(model)
    onnx.checker.check_model(model)
    return model


def _batch_dim(value: Any) -> int | str:
    dim = value.type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "N")


def _width(model: Any) -> int:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name.endswith("post_layernorm.weight"):
            return int(numpy_helper.to_array(t).shape[0])
    raise GraphError("post_layernorm.weight not found: cannot tell the token width")


#: Encoder precisions :func:`feature_encoder` builds: the int8 graph as shipped (its
#: results depend on the CPU: see :func:`aiscan.scanner.core.models.encoder_precision`),
#: float32 (dequantised; the default's: the same features on every CPU kind), float16
#: (for CUDA and TensorRT), "int8rr": the float32 graph quantised again by ONNX Runtime's
#: own quantiser with 7-bit weights (:func:`requantise`), 2.2x float32's speed on a VNNI
#: CPU but with features that still differ between CPU kinds, and "int8mix": the same
#: with the MLP output projections of :data:`FLOAT_FC2_BLOCKS` left in float32.
PRECISIONS = ("int8", "fp32", "fp16", "int8rr", "int8mix")
#: The blocks whose MLP output projection (``fc2``) "int8mix" keeps in float32: their
#: inputs (after GELU) carry outlier activations that one 8-bit scale per tensor rounds
#: away. Measured on 64 train-v1/v2 originals through the canonical step (2-core Xeon):
#: the last class token's cosine to the float32 graph's is 0.937 with every MatMul
#: quantised, 0.975 with these three kept in float32, 0.984 with all twelve.
FLOAT_FC2_BLOCKS = (6, 7, 8)


def requantise(model: Any, float_nodes: tuple[str, ...] = ()) -> Any:
    """``model`` (float32) with every MatMul on a constant weight dynamically quantised by
    ``onnxruntime.quantization.quantize_dynamic``: signed 8-bit weights per output channel,
    ``reduce_range`` (7-bit weights), activations quantised to unsigned 8 bits at run time.

    Why 7 bits: ONNX Runtime's AVX2 int8 kernels (CPUs without VNNI) add pairs of u8 x s8
    products in 16-bit registers, which saturate for full-range weights (2 x 255 x 127 >
    32,767); VNNI CPUs accumulate in 32 bits and do not. With 7-bit weights a pair is at
    most 2 x 255 x 64 = 32,640, so both kernels compute the exact integer products (ONNX
    Runtime's documentation gives ``reduce_range`` as the remedy for non-VNNI CPUs). The
    features still differ between CPU kinds, by less: the float operations between two
    quantisations take other kernel paths, and each dynamic quantisation can round a
    slightly different value to another step (``python -m aiscan.benchmarks.cpu_kinds``,
    a VNNI Xeon against an emulated AVX2 EPYC, 4 images: class-token cosine 0.997 on
    average, 0.974 at worst, p_ai up to 0.11 apart). ``float_nodes``: MatMuls, by node
    name, left in float32.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="aiscan-requantise-") as tmp, _quiet_quantiser():
        out = Path(tmp) / "int8rr.onnx"
        quantize_dynamic(
            model,
            out,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(float_nodes),
        )
        return onnx.load(str(out))


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """Hold back the quantiser's advice ("Please consider to run pre-processing..."),
    which it logs as a warning on the root logger: the graph is aiscan's to build, and a
    scan's stderr is the operator's."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def feature_graph(int8_path: str | Path, precision: str) -> Any:
    """The encoder at ``precision`` with the ``cls_tokens`` output, in memory."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model = onnx.load(str(int8_path))
    if precision != "int8":
        model = dequantise(model)
    model = expose_cls_tokens(model)
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    elif precision == "int8rr":
        model = requantise(one_image(model))
    elif precision == "int8mix":
        wanted = {f"/encoder/layers.{b}/mlp/fc2/MatMul" for b in FLOAT_FC2_BLOCKS}
        keep = tuple(n.name for n in model.graph.node if any(n.name.endswith(w) for w in wanted))
        if len(keep) != len(wanted):
            raise GraphError(f"int8mix: found {len(keep)} of the {len(wanted)} fc2 MatMuls")
        model = requantise(one_image(model), keep)
    return model


def one_image(model: Any) -> Any:
    """A copy of ``model`` whose inputs and outputs have a batch axis of exactly 1.

    Why: a dynamically quantised graph quantises each activation with one scale for the
    whole tensor (``DynamicQuantizeLinear``), batch axis included, so in a batch of
    several images each image's features would depend on its batch-mates (``python -m
    aiscan.benchmarks.batch_mates``: 64 originals of train-v1/v3, batch 1 against 32,
    through aiscan-clip-v3: p_ai moved 0.048 on average, 0.36 at most, 11% of verdicts
    changed). With the axis fixed at 1 every image is quantised on its own, in training
    and in serving alike, and a runner that meets a fixed batch axis feeds one image per
    run (:class:`aiscan.scanner.core.infer.Classifier`,
    :class:`Encoder`).
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    del model.graph.value_info[:]  # shapes inferred for a symbolic batch; re-inferred
    return model


def feature_encoder(int8_path: str | Path, precision: str, out: str | Path) -> Path:
    """Write :func:`feature_graph` to ``out`` (atomically)."""
    import onnx

    model = feature_graph(int8_path, precision)
    with replacing(out, unique=True) as tmp:
        onnx.save(model, str(tmp))
    return Path(out)


def cached_feature_encoder(precision: str, fetch: bool = True) -> Path:
    """:func:`feature_encoder` of the pinned encoder at ``precision``, kept in aiscan's
    cache (feature extraction and benchmarks run it as a session of its own), named by
    the encoder's sha256 and :data:`GRAPH_VERSION`, built once and verified before use
    (:func:`aiscan.model.cache.built`)."""
    import onnx

    from .cache import built, cache_folder
    from .clip import CLIP_B16, encoder_path

    source = encoder_path(fetch=fetch)
    name = f"{CLIP_B16.name}-features-{precision}-{CLIP_B16.sha256[:12]}-g{GRAPH_VERSION}.onnx"
    return built(
        cache_folder("encoders") / name,
        lambda tmp: onnx.save(feature_graph(source, precision), str(tmp)),
    )


class Encoder:
    """An ONNX Runtime session (CPU) over a feature graph of :func:`feature_encoder`:
    pixels in, named features out, whatever the batch size (feature extraction and the
    benchmarks run it)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import os

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input = first.name
        self.names = tuple(o.name for o in self.session.get_outputs())
        #: A graph with a fixed batch axis (the dynamically quantised ones take one image
        #: per run: :func:`one_image`) is fed that many at a time.
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from .pixels import fixed_batches

        parts = [
            [out[:real] for out in self.session.run(None, {self.input: chunk})]
            for chunk, real in fixed_batches(batch, self.fixed_batch or len(batch))
        ]
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.names)}


# -- heads on the encoder ------------------------------------------------------------

#: The metadata key (under ``aiscan.``) of a head that needs an encoder in front of it.
ENCODER_KEY = "encoder"


def head_encoder(info_extra: dict[str, Any]) -> dict[str, Any] | None:
    """The encoder a head model names in its metadata, or None for a whole model."""
    enc = info_extra.get(ENCODER_KEY)
    return enc if isinstance(enc, dict) else None


def assemble(encoder: Any, head: Any) -> Any:
    """One graph: ``pixel_values`` through the encoder into the head, the head's outputs
    and metadata kept. The head's inputs must be named after encoder outputs, and its
    other names must not clash with the encoder's (a head prefixes them)."""
    import onnx
    from onnx import compose, version_converter

    wanted = [i.name for i in head.graph.input]
    have = {o.name for o in encoder.graph.output}
    missing = [n for n in wanted if n not in have]
    if missing:
        raise GraphError(f"the head reads {missing}, which the encoder does not give")
    opset = max(op.version for op in encoder.opset_import if op.domain in ("", "ai.onnx"))
    head_opset = max(op.version for op in head.opset_import if op.domain in ("", "ai.onnx"))
    if head_opset != opset:
        head = version_converter.convert_version(head, opset)
    head.ir_version = encoder.ir_version
    merged = compose.merge_models(encoder, head, io_map=[(n, n) for n in wanted])
    merged.graph.name = "aiscan"
    keep = [o for o in merged.graph.output if o.name not in have]
    del merged.graph.output[:]
    merged.graph.output.extend(keep)
    del merged.metadata_props[:]
    merged.metadata_props.extend(head.metadata_props)
    _dedupe_opsets(merged)
    _prune(merged)
    onnx.checker.check_model(merged)
    return merged


def _dedupe_opsets(model: Any) -> None:
    """One ``opset_import`` entry per domain: ``compose.merge_models`` keeps both inputs'
    entries, and tools such as ``onnxruntime.quantization`` refuse a domain named twice."""
    seen: dict[str, Any] = {}
    for op in model.opset_import:
        if op.domain not in seen or op.version > seen[op.domain].version:
            seen[op.domain] = op
    kept = [(d, op.version) for d, op in seen.items()]
    del model.opset_import[:]
    for domain, version in kept:
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


def assembled_model(head_path: str | Path, precision: str, fetch: bool = True) -> Path:
    """The whole model (encoder at ``precision`` + the head at ``head_path``) in aiscan's
    cache, built once by the first process that needs it and verified before every use
    (:func:`aiscan.model.cache.built`): the encoder is fetched if absent and ``fetch``
    (:func:`aiscan.model.clip.encoder_path`), rewritten (:func:`feature_graph`) and joined
    to the head (:func:`assemble`). The cached file is named by the head's sha256, the
    precision, the encoder's sha256 and :data:`GRAPH_VERSION`, so a new head, encoder or
    rewrite never meets an old assembly.

    Raises:
        GraphError: the head names another encoder, or does not fit this one.
        EncoderUnavailableError: the encoder is absent and cannot (or may not) be fetched.
        CacheError: the cache cannot be written.
    """
    import onnx

    from .cache import built, cache_folder, sha256_of
    from .clip import CLIP_B16, encoder_path
    from .meta import ModelInfo

    head = onnx.load(str(head_path))
    info = ModelInfo.from_onnx(head)
    wanted = head_encoder(info.extra)
    if wanted is None:
        raise GraphError(f"{head_path} is a whole model, not a head: nothing to assemble")
    if wanted.get("sha256") != CLIP_B16.sha256:
        raise GraphError(
            f"{head_path} was fitted on encoder {wanted.get('name')} (sha256 "
            f"{str(wanted.get('sha256'))[:12]}...), which this aiscan does not know"
        )
    name = (
        f"{info.model_id}-{sha256_of(head_path)[:16]}-{precision}-"
        f"{CLIP_B16.sha256[:12]}-g{GRAPH_VERSION}.onnx"
    )
    target = cache_folder("models") / name

    def build(tmp: Path) -> None:
        merged = assemble(feature_graph(encoder_path(fetch=fetch), precision), head)
        entry = merged.metadata_props.add()  # what the benchmarks and the summary report
        entry.key, entry.value = "aiscan.precision", json.dumps(precision)
        onnx.save(merged, str(tmp))

    return built(target, build)
