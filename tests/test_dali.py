"""The DALI path: CPU operators here (same graph as on the GPU), GPU tests skip without one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiscan.model import clip
from aiscan.model.pixels import DecodeLimits, normalize_batch, reference_pixels
from aiscan.model.preprocessing import RESIZE_POLICIES, Preprocessing
from aiscan.scanner.core.discovery import Found
from aiscan.scanner.output.formats import read_rows
from tests.conftest import SHARED_DATA, encode, jpeg_bytes, photo

pytest.importorskip("nvidia.dali")
from aiscan.scanner.core.dali import DaliDecoder, dali_claiming_decoder

SPEC = Preprocessing()

# DALI's antialiased linear resize vs Pillow's bilinear, both after a full decode: measured
# mean |diff| about 0.1/255 and max 10/255 on 1024 px photo-like JPEGs.
DALI_TOLERANCE = {"mean": 0.5, "max": 16}
#: With the canonical step (shrink to 256 px, JPEG q85) DALI's Lanczos and its JPEG
#: distortion operator stand in for Pillow's thumbnail and libjpeg: measured on these
#: images with DALI's CPU operators, 0.2-1.5 levels on average, 20 at most.
CANONICAL_DALI_TOLERANCE = {"mean": 2.0, "max": 32}


def _write(tmp_path: Path, name: str, data: bytes) -> Found:
    path = tmp_path / name
    path.write_bytes(data)
    return Found(str(path))


def _run(found: list[Found], spec: Preprocessing = SPEC, batch: int = 8):
    probe = dali_claiming_decoder(spec, DecodeLimits())
    items = [probe(f) for f in found]
    return DaliDecoder(spec, batch, 2, None)(items)


def _pixels_diff(tensor: np.ndarray, path: str, spec: Preprocessing = SPEC) -> np.ndarray:
    ref = normalize_batch([reference_pixels(path, spec)], spec)[0]
    return np.abs(tensor - ref) * 255.0 * spec.std[0]


@pytest.mark.parametrize("resize", [*RESIZE_POLICIES, "clip", "clip-canonical"])
def test_dali_cpu_matches_reference_including_exif_orientation(tmp_path: Path, resize: str) -> None:
    # "clip": CLIP's native definition (crop, bicubic, CLIP mean/std); "clip-canonical":
    # the default model's (the same after the canonical 256 px JPEG q85 copy)
    specs = {"clip": clip.PREPROCESSING, "clip-canonical": clip.CANONICAL_PREPROCESSING}
    spec = specs.get(resize) or Preprocessing(resize=resize)
    tolerance = CANONICAL_DALI_TOLERANCE if spec.canonical else DALI_TOLERANCE
    exif = Image.Exif()
    exif[0x0112] = 6
    found = [
        _write(tmp_path, "a.jpg", jpeg_bytes(photo(1024, 768))),
        _write(tmp_path, "rot.jpg", jpeg_bytes(photo(640, 400, seed=2), exif=exif.tobytes())),
        _write(tmp_path, "grey.jpg", jpeg_bytes(photo(500, 300).convert("L"))),
        _write(tmp_path, "prog.jpg", jpeg_bytes(photo(800, 600, seed=3), progressive=True)),
        _write(tmp_path, "small.jpg", jpeg_bytes(photo(200, 150, seed=4))),
    ]
    batch = _run(found, spec)
    for item in batch.items:
        assert item.status == "ok" and item.tensor is not None, item.error
        diff = _pixels_diff(item.tensor, item.path, spec)
        assert diff.mean() <= tolerance["mean"], item.path
        assert diff.max() <= tolerance["max"], item.path
    rot = batch.items[1]
    assert (rot.width, rot.height) == (400, 640)


def test_formats_dali_would_get_wrong_take_the_cpu_path(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    found = [
        _write(tmp_path, "alpha.png", encode(rgba, "PNG")),
        _write(tmp_path, "cmyk.jpg", jpeg_bytes(photo(64, 64).convert("CMYK"))),
        _write(
            tmp_path,
            "deep.png",
            encode(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"),
        ),
    ]
    probe = dali_claiming_decoder(SPEC, DecodeLimits())
    for item in map(probe, found):
        assert item.status == "ok" and item.encoded is None and item.pixels is not None
        np.testing.assert_array_equal(item.pixels, reference_pixels(item.path, SPEC))


def test_a_corrupt_file_fails_only_itself_and_the_pipeline_recovers(tmp_path: Path) -> None:
    good = jpeg_bytes(photo(640, 480))
    found = [_write(tmp_path, f"{i}.jpg", good) for i in range(3)]
    found.insert(1, _write(tmp_path, "torn.jpg", good[: len(good) // 3]))
    probe = dali_claiming_decoder(SPEC, DecodeLimits())
    items = [probe(f) for f in found]
    assert all(it.encoded is not None for it in items)  # the header alone looks fine
    dali = DaliDecoder(SPEC, 8, 2, None)
    batch = dali(items)
    assert dali.failed_batches == 1
    assert [it.status for it in batch.items] == ["ok", "error", "ok", "ok"]
    assert "truncated" in batch.items[1].error
    assert all(it.pixels is not None for i, it in enumerate(batch.items) if i != 1)
    again = dali([probe(f) for i, f in enumerate(found) if i != 1])  # rebuilt, still works
    assert all(it.tensor is not None for it in again.items) and dali.failed_batches == 1


@pytest.mark.parametrize("policy", ["squash", "crop"])
def test_scan_with_dali_gives_the_cpu_paths_rows(
    bad_tree: dict[str, str], policy: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from aiscan.scanner.cli import main
    from aiscan.scanner.cli.common import EXIT_FILE_ERRORS

    model = request.getfixturevalue("tiny_model" if policy == "squash" else "tiny_crop_model")
    root = str(Path(next(iter(bad_tree))).parent)
    rows = {}
    for decoder in ("cpu", "dali"):
        out = tmp_path / f"{decoder}.csv"
        cli = [root, "--out", str(out), "--model", str(model), "--decoder", decoder, "-q"]
        assert main(cli) == EXIT_FILE_ERRORS  # the tree's broken files, whichever decoder
        rows[decoder] = {r.path: r for r in read_rows(out)}
    assert {p: r.status for p, r in rows["dali"].items()} == bad_tree
    for path, row in rows["dali"].items():
        cpu = rows["cpu"][path]
        assert (row.status, row.error) == (cpu.status, cpu.error)
        if row.p_ai is not None and cpu.p_ai is not None:
            assert abs(row.p_ai - cpu.p_ai) < 0.02
    summary = (tmp_path / "dali.csv.summary.json").read_text()
    assert '"decoder": "dali-cpu"' in summary


@pytest.mark.gpu
def test_gpu_decode_and_cuda_inference_match_cpu(gpu_model: Path, tmp_path: Path) -> None:
    """DALI mixed decode + ONNX Runtime CUDA EP with IO binding vs the CPU fp32 path."""
    from aiscan.scanner.core.infer import Classifier

    found = [_write(tmp_path, f"{i}.jpg", jpeg_bytes(photo(1024, 768, seed=i))) for i in range(6)]
    spec = Classifier(gpu_model, "cpu").info.preprocessing
    probe = dali_claiming_decoder(spec, DecodeLimits())
    batch = DaliDecoder(spec, 8, 2, 0)([probe(f) for f in found])
    assert batch.device is not None and len(batch.on_device) == 6
    host = np.asarray(batch.device.as_cpu())
    ref = normalize_batch([reference_pixels(f.path, spec) for f in found], spec)
    assert np.abs(host - ref).mean() * 127.5 <= DALI_TOLERANCE["mean"]
    p_gpu = Classifier(gpu_model, "cuda").predict_device(batch.device)
    p_cpu = Classifier(gpu_model, "cpu").predict(ref)
    assert np.abs(p_gpu - p_cpu).max() < 0.02


#: DALI's tensors against training's, per pixel and channel in /255 units, by the model's
#: decode mode. "full": both decode every pixel, so DALI_TOLERANCE. "draft" (every shipped
#: model): training's DCT-scaled decode is held to the reference within the fast-path
#: bound (tests/test_preprocess.py) and DALI within DALI_TOLERANCE, so up to their sum;
#: measured here: mean 0.19-1.98 per image (the worst a noisy 3000x2000 photo), max 23.
DALI_VS_TRAINING = {"full": {"mean": 0.5, "max": 16}, "draft": {"mean": 2.5, "max": 32}}


@pytest.mark.parametrize("decode", ["draft", "full"])
@pytest.mark.parametrize("resize", RESIZE_POLICIES)
def test_dali_tensor_against_the_training_tensor(tmp_path: Path, resize: str, decode: str) -> None:
    pytest.importorskip("torch")
    from aiscan.train.data import ImageDataset, Sample, make_collate

    spec = Preprocessing(resize=resize, decode=decode)
    sizes = [(1024, 768), (768, 1024), (3000, 2000), (640, 480), (500, 260)]
    found = [
        _write(tmp_path, f"{i}.jpg", jpeg_bytes(photo(w, h, seed=i)))
        for i, (w, h) in enumerate(sizes)
    ]
    dataset = ImageDataset([Sample(f.path, 0, "s") for f in found], spec)
    training, _ = make_collate(spec)([dataset[i] for i in range(len(found))])
    batch = _run(found, spec)
    assert all(it.tensor is not None for it in batch.items)
    served = np.stack([it.tensor for it in batch.items])
    diff = np.abs(served - training.numpy()) * 255.0 * spec.std[0]
    bound = DALI_VS_TRAINING[decode]
    assert diff.mean(axis=(1, 2, 3)).max() <= bound["mean"]
    assert diff.max() <= bound["max"]


#: Largest |p_ai| difference allowed between decoders for the shipped model: DALI's
#: operators, the CPU fast path (DCT-scaled JPEG decode) and the full reference decode.
#: The pixel bounds above allow up to 16/255 per pixel; this is what reaches the verdict.
P_AI_TOLERANCE = 0.05


def _p_ai_three_ways(paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shipped fast model's p_ai through the CPU fast path, DALI and the reference
    decode."""
    from aiscan.scanner.core.decode import Batch, CpuDecoder
    from aiscan.scanner.core.infer import Classifier
    from aiscan.scanner.core.models import shipped_model

    model = shipped_model("fast")
    if model is None:
        pytest.skip("this build ships no fast model")
    clf = Classifier(model, "cpu")
    spec = clf.info.preprocessing
    cpu = CpuDecoder(spec, evidence=False)
    fast = clf.predict(normalize_batch([cpu(Found(p)).pixels for p in paths], spec))
    ref = clf.predict(normalize_batch([reference_pixels(p, spec) for p in paths], spec))
    probe, dali = (
        dali_claiming_decoder(spec, DecodeLimits(), evidence=False),
        DaliDecoder(spec, 8, 2, None),
    )
    items = []
    for start in range(0, len(paths), 8):
        items += dali([probe(Found(p)) for p in paths[start : start + 8]]).items
    assert all(it.tensor is not None for it in items), "DALI fell back to the CPU"
    via_dali = clf.predict(np.stack([it.tensor for it in Batch(items).items]))
    return fast, via_dali, ref


@pytest.mark.slow
def test_shipped_model_gives_the_same_p_ai_through_every_decoder(tmp_path: Path) -> None:
    sizes = [(1024, 768), (768, 1024), (640, 480), (2000, 1500), (300, 300), (500, 260)]
    paths = []
    for i, (w, h) in enumerate(sizes):
        paths.append(str(_write(tmp_path, f"{i}.jpg", jpeg_bytes(photo(w, h, seed=i))).path))
    fast, via_dali, ref = _p_ai_three_ways(paths)
    assert np.abs(via_dali - fast).max() <= P_AI_TOLERANCE
    assert np.abs(fast - ref).max() <= P_AI_TOLERANCE


@pytest.mark.slow
def test_shipped_model_same_p_ai_through_every_decoder_on_real_photos() -> None:
    found = sorted((SHARED_DATA / "train-v2").glob("*/*/*.jpg"))[::60][:32]
    if not found:
        pytest.skip(f"no shared data at {SHARED_DATA} (real JPEGs for this check)")
    fast, via_dali, ref = _p_ai_three_ways([str(p) for p in found])
    assert np.abs(via_dali - ref).max() <= P_AI_TOLERANCE
    assert np.abs(fast - ref).max() <= P_AI_TOLERANCE


def test_the_python_api_decodes_with_dali_too(tiny_model: Path, tmp_path: Path) -> None:
    """Detector(decoder="dali") takes the scan's DALI stages (CPU operators here): the
    same rows as the CPU path, p_ai within the DALI bound, files and in-memory bytes."""
    from aiscan.scanner.api import Detector

    files = [
        _write(tmp_path, f"{i}.jpg", jpeg_bytes(photo(640, 480, seed=i))).path for i in range(5)
    ]
    files.append(_write(tmp_path, "broken.jpg", b"\xff\xd8\xff\xe0 broken").path)
    cpu = list(Detector(tiny_model, device="cpu", decoder="cpu").classify_files(files))
    dali_detector = Detector(tiny_model, device="cpu", decoder="dali", batch_size=4)
    assert dali_detector.engine.name == "dali-cpu"
    for rows in (
        list(dali_detector.classify_files(files)),
        list(dali_detector.classify_bytes([(f, Path(f).read_bytes()) for f in files])),
    ):
        assert [(r.path, r.status) for r in rows] == [(r.path, r.status) for r in cpu]
        for a, b in zip(rows, cpu, strict=True):
            assert (a.p_ai is None) == (b.p_ai is None)
            if a.p_ai is not None and b.p_ai is not None:
                assert abs(a.p_ai - b.p_ai) <= 0.05
