"""Every decode case, and the fast path held against the reference preprocessing."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiscan.model import clip
from aiscan.model.pixels import (
    DecodeLimits,
    ImageTooLargeError,
    load_pixels,
    normalize_batch,
    reference_pixels,
    view_region,
)
from aiscan.model.preprocessing import RESIZE_POLICIES, Preprocessing
from tests.conftest import encode, jpeg_bytes, photo, png_with_size

SPEC = Preprocessing(input_size=(32, 32))
CLIP_SPEC = clip.PREPROCESSING


def _solid(mode: str, color: object, size: tuple[int, int] = (20, 10)) -> Image.Image:
    return Image.new(mode, size, color)  # type: ignore[arg-type]


def _decode(data: bytes, spec: Preprocessing = SPEC) -> np.ndarray:
    return load_pixels(data, spec).pixels.astype(int)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: left becomes top
    data = jpeg_bytes(img, exif=exif.tobytes())
    out = load_pixels(data, SPEC)
    assert (out.width, out.height) == (20, 40)
    top, bottom = out.pixels[:8].reshape(-1, 3).mean(0), out.pixels[-8:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_palette_image_keeps_its_colours() -> None:
    img = _solid("RGB", (200, 30, 60)).quantize(4)
    assert img.mode == "P"
    np.testing.assert_allclose(_decode(encode(img, "PNG")).mean((0, 1)), (200, 30, 60), atol=2)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_composited_on_white(mode: str) -> None:
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent black
    img.paste((255, 0, 0, 255), (0, 0, 16, 8))  # opaque red top half
    if mode == "LA":
        img = img.convert("LA")
    elif mode == "P":
        img = img.convert("P")  # saved as a palette PNG with a tRNS chunk
    data = encode(img, "PNG")
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == mode and (mode != "P" or "transparency" in probe.info)
    out = _decode(data)
    np.testing.assert_array_equal(out[-4:], 255)  # bottom: transparent -> white, not black
    assert out[:4].mean() < 255


def test_grayscale_becomes_equal_rgb() -> None:
    out = _decode(encode(_solid("L", 77), "PNG"))
    assert out.shape == (32, 32, 3) and (out == 77).all()


def test_one_bit_image() -> None:
    out = _decode(encode(_solid("1", 1), "PNG"))
    assert (out == 255).all()


def test_cmyk_jpeg_converts_to_rgb() -> None:
    rgb = (30, 160, 220)
    data = jpeg_bytes(_solid("RGB", rgb).convert("CMYK"))
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == "CMYK"
    np.testing.assert_allclose(_decode(data).mean((0, 1)), rgb, atol=8)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32768, 128), (0, 0)])
def test_16bit_grayscale_keeps_its_range(value: int, expected: int) -> None:
    img = Image.fromarray(np.full((10, 20), value, dtype=np.uint16))
    assert img.mode.startswith("I;16")
    out = _decode(encode(img, "PNG"))
    assert np.abs(out - expected).max() <= 1


def test_gif_uses_the_first_frame() -> None:
    frames = [_solid("RGB", (255, 0, 0)), _solid("RGB", (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(_decode(data).mean((0, 1)), (255, 0, 0), atol=3)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF"])
def test_lossless_formats_match_reference_exactly(fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(photo(90, 60), fmt, **kw)
    np.testing.assert_array_equal(load_pixels(data, SPEC).pixels, reference_pixels(data, SPEC))


def test_huge_header_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match=r"60000x60000 = 3600 MP"):
        load_pixels(png_with_size(60_000, 60_000), SPEC)
    with pytest.raises(ImageTooLargeError):
        load_pixels(encode(photo(100, 100), "PNG"), SPEC, limits=DecodeLimits(max_pixels=9_999))


# The fast path decodes JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain, never below the
# model's input size, then resizes exactly as the reference does. Measured on photo-like
# JPEGs (tests/conftest.photo, quality 90): mean |diff| about 0.5/255, max under 10/255.
FAST_TOLERANCE = {"mean": 1.5, "p99": 6, "max": 16}
# The "crop" policy resizes the region by less than "squash" does on a 4:3 photo (1.7x
# against 2.2x after a 1/8 DCT-scaled decode of 12 MP), so less of the DCT scaling is
# smoothed away: measured mean 1.6/255, p99 6, max 12 on the same noisy 12 MP JPEGs.
FAST_TOLERANCE_CROP = {"mean": 1.8, "p99": 6, "max": 16}


@pytest.mark.parametrize("resize", [*RESIZE_POLICIES, "clip"])
@pytest.mark.parametrize("size", [(1024, 768), (3000, 4000)])
def test_fast_jpeg_decode_stays_close_to_reference(size: tuple[int, int], resize: str) -> None:
    # 224, the shipped models' size; "clip" is the default model's definition (crop, bicubic)
    spec = CLIP_SPEC if resize == "clip" else Preprocessing(resize=resize)
    data = jpeg_bytes(photo(*size))
    diff = np.abs(_decode(data, spec) - reference_pixels(data, spec).astype(int))
    bound = FAST_TOLERANCE if resize == "squash" else FAST_TOLERANCE_CROP
    assert diff.mean() <= bound["mean"]
    assert np.percentile(diff, 99) <= bound["p99"]
    assert diff.max() <= bound["max"]
    exact = load_pixels(data, spec, decode="full").pixels
    np.testing.assert_array_equal(exact, reference_pixels(data, spec))


def test_small_jpeg_is_not_drafted() -> None:
    data = jpeg_bytes(photo(300, 200))  # half of 300x200 would be under 224: full decode
    np.testing.assert_array_equal(
        load_pixels(data, Preprocessing()).pixels, reference_pixels(data, Preprocessing())
    )


def test_normalize_batch_layout_and_values() -> None:
    spec = Preprocessing(input_size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0], img[..., 1], img[0, 0, 2] = 255, 0, 51
    batch = normalize_batch([img, img], spec)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(batch[:, 0], 1.0)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(batch[:, 1], -2.0)  # (0 - 0.5) / 0.25
    np.testing.assert_allclose(batch[0, 2, 0, 0], (0.2 - 0.5) / 0.5, rtol=1e-6)


def test_spec_round_trips_and_hash_is_stable() -> None:
    spec = Preprocessing(input_size=(160, 160), mean=(0.1, 0.2, 0.3))
    again = Preprocessing.from_json(spec.to_json())
    assert again == spec and again.sha256() == spec.sha256()
    assert spec.sha256() != Preprocessing().sha256()
    assert Preprocessing(decode="full").sha256() != Preprocessing().sha256()
    # A fixed definition has a fixed text and hash, pinned here: models store both, so a
    # change to the canonical form must come with a new version (as decode's did).
    assert Preprocessing().to_json() == (
        '{"background":255,"canonical_quality":0,"canonical_size":0,"decode":"draft",'
        '"input_size":[224,224],"interpolation":"bilinear","mean":[0.5,0.5,0.5],'
        '"resize":"squash","std":[0.5,0.5,0.5],"version":"aiscan-preprocess/3"}'
    )
    assert Preprocessing().sha256() == (
        "ad5d76104a26341ef25a101268c8da7f323e8b7df49ae6ca7e9694a19fe8c512"
    )
    canonical = Preprocessing(canonical_size=256, canonical_quality=85)
    assert Preprocessing.from_json(canonical.to_json()) == canonical
    assert canonical.sha256() != Preprocessing().sha256()


#: Version 2's canonical text of the default definition, as every model exported before
#: the canonical step stores it (the shipped fast model among them).
V2_DEFAULT = (
    '{"background":255,"decode":"draft","input_size":[224,224],'
    '"interpolation":"bilinear","mean":[0.5,0.5,0.5],"resize":"squash",'
    '"std":[0.5,0.5,0.5],"version":"aiscan-preprocess/2"}'
)


def test_version_2_reads_as_no_canonical_step() -> None:
    assert Preprocessing.from_json(V2_DEFAULT) == Preprocessing()
    with pytest.raises(ValueError, match="no canonical step"):
        Preprocessing.from_json(V2_DEFAULT.replace('"std', '"canonical_size":256,"std'))


#: Version 1's canonical text of the default definition, as models exported before the
#: decode mode was part of the definition store it (the shipped default model among them).
V1_DEFAULT = (
    '{"background":255,"input_size":[224,224],"interpolation":"bilinear",'
    '"mean":[0.5,0.5,0.5],"resize":"squash","std":[0.5,0.5,0.5],'
    '"version":"aiscan-preprocess/1"}'
)


def test_version_1_reads_as_draft_decoding() -> None:
    """Everything trained and scanned before version 2 used draft JPEG decoding."""
    assert Preprocessing.from_json(V1_DEFAULT) == Preprocessing(decode="draft")
    with pytest.raises(ValueError, match="no decode field"):
        Preprocessing.from_json(V1_DEFAULT.replace('"input', '"decode":"full","input'))
    with pytest.raises(ValueError, match="not supported"):
        Preprocessing.from_json(V1_DEFAULT.replace("preprocess/1", "preprocess/9"))


@pytest.mark.parametrize("resize", RESIZE_POLICIES)
def test_the_decoder_follows_the_definitions_decode_mode(resize: str) -> None:
    data = jpeg_bytes(photo(1600, 1200))
    full = Preprocessing(resize=resize, decode="full")
    draft = Preprocessing(resize=resize, decode="draft")
    np.testing.assert_array_equal(load_pixels(data, full).pixels, reference_pixels(data, full))
    drafted = load_pixels(data, draft).pixels
    assert not np.array_equal(drafted, reference_pixels(data, draft))
    # an explicit mode overrides the definition's (aiscan --exact-decode)
    np.testing.assert_array_equal(
        load_pixels(data, draft, decode="full").pixels, reference_pixels(data, draft)
    )
    with pytest.raises(ValueError, match="decode must be one of"):
        load_pixels(data, draft, decode="exact")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_size": (8, 8)},
        {"std": (0.5, 0.0, 0.5)},
        {"resize": "letterbox"},
        {"interpolation": "nearest"},
        {"mean": (0.5, 0.5)},
        {"background": 300},
        {"version": "aiscan-preprocess/1"},
        {"decode": "exact"},
        {"canonical_size": 256},
        {"canonical_quality": 85},
        {"canonical_size": 8, "canonical_quality": 85},
        {"canonical_size": 256, "canonical_quality": 101},
        {"canonical_size": -1, "canonical_quality": 85},
    ],
)
def test_invalid_spec_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Preprocessing(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_avif_and_heic_decode_when_their_plugin_is_installed(fmt: str, tmp_path: Path) -> None:
    from aiscan.scanner.core.decode import CpuDecoder, _plugin_available
    from aiscan.scanner.core.discovery import Found

    if not _plugin_available(fmt):
        pytest.skip(f"no {fmt} decoder installed")
    path = tmp_path / ("x.avif" if fmt == "AVIF" else "x.heic")
    Image.new("RGB", (64, 48), (200, 30, 60)).save(path, fmt)
    item = CpuDecoder(SPEC)(Found(str(path)))
    assert item.status == "ok", item.error
    assert (item.width, item.height) == (64, 48)
    assert item.pixels is not None
    np.testing.assert_allclose(item.pixels.reshape(-1, 3).mean(0), (200, 30, 60), atol=12)


def _three_bands(width: int, height: int) -> bytes:
    """Red left quarter, green middle half, blue right quarter (lossless PNG)."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 4, 0] = 255
    arr[:, width // 4 : 3 * width // 4, 1] = 255
    arr[:, 3 * width // 4 :, 2] = 255
    return encode(Image.fromarray(arr), "PNG")


def test_squash_keeps_the_whole_image_and_crop_the_centred_square() -> None:
    data = _three_bands(200, 100)  # 2:1: the centred square is exactly the green half
    squash = load_pixels(data, SPEC).pixels.astype(int)
    crop = load_pixels(data, Preprocessing(input_size=(32, 32), resize="crop")).pixels.astype(int)
    assert squash[:, 2, 0].min() > 200 and squash[:, -3, 2].min() > 200  # red and blue edges
    assert (crop[:, 2:-2, 1] > 200).all() and crop[:, 2:-2, [0, 2]].max() < 40
    tall = load_pixels(
        _three_bands(100, 200), Preprocessing(input_size=(32, 32), resize="crop")
    ).pixels.astype(int)
    np.testing.assert_array_equal(tall, load_pixels(_three_bands(100, 200), SPEC).pixels)


def test_crop_regions_stay_inside_the_image_with_the_input_aspect() -> None:
    spec = Preprocessing(input_size=(24, 32), resize="crop")  # 4:3 input
    for w, h in [(1, 1), (3, 997), (997, 3), (640, 480), (641, 479), (4000, 3000), (17, 4096)]:
        for pos in (0.0, 0.25, 0.5, 1.0):
            left, top, right, bottom = view_region((w, h), spec, pos)
            assert 0 <= left <= right <= w and 0 <= top <= bottom <= h
            assert (right - left) * 24 == pytest.approx((bottom - top) * 32)
            assert right - left == pytest.approx(w) or bottom - top == pytest.approx(h)
    assert view_region((300, 100), Preprocessing(resize="crop"), 0.0) == (0.0, 0.0, 100.0, 100.0)
    assert view_region((300, 100), Preprocessing(resize="crop"), 1.0) == (200.0, 0.0, 300.0, 100.0)
    assert view_region((300, 100), SPEC, 0.0) == (0.0, 0.0, 300.0, 100.0)  # squash: all


def test_crop_policy_follows_exif_orientation() -> None:
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100, 0] = 255  # stored: left half red, right half blue
    arr[:, 100:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 100 wide, 200 tall, red on top
    data = encode(Image.fromarray(arr), "PNG", exif=exif.tobytes())
    spec = Preprocessing(input_size=(32, 32), resize="crop")
    out = load_pixels(data, spec)
    assert (out.width, out.height) == (100, 200)
    np.testing.assert_array_equal(out.pixels, reference_pixels(data, spec))
    top, bottom = out.pixels[:8].reshape(-1, 3).mean(0), out.pixels[-8:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and bottom[2] > 200  # the centred square spans both halves


def test_mpo_camera_files_take_the_fast_jpeg_path() -> None:
    """Multi-picture JPEGs (many cameras and phones): first picture, DCT-scaled decode."""
    first, second = photo(1600, 1200, seed=1), photo(1600, 1200, seed=2)
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second], quality=90)
    mpo = buf.getvalue()
    with Image.open(io.BytesIO(mpo)) as img:
        assert img.format == "MPO" and getattr(img, "n_frames", 1) == 2
    spec = Preprocessing()
    fast = load_pixels(mpo, spec)
    assert fast.format == "MPO" and (fast.width, fast.height) == (1600, 1200)
    as_jpeg = load_pixels(jpeg_bytes(first), spec).pixels  # the same first picture alone
    np.testing.assert_array_equal(fast.pixels, as_jpeg)
    assert not np.array_equal(fast.pixels, load_pixels(mpo, spec, decode="full").pixels)


def test_every_interpolation_the_definition_allows_has_a_pillow_filter() -> None:
    from aiscan.model.pixels import INTERPOLATIONS
    from aiscan.model.preprocessing import INTERPOLATION_NAMES

    assert tuple(INTERPOLATIONS) == INTERPOLATION_NAMES


def _png_with_text() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", "x" * 500)
    buf = io.BytesIO()
    photo(64, 48).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _break_crc(data: bytes, kind: bytes) -> bytes:
    at = data.index(kind) - 4
    length = int.from_bytes(data[at : at + 4], "big")
    crc_at = at + 8 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4]) + data[crc_at + 4 :]


def test_a_png_with_a_broken_text_chunk_decodes_as_a_browser_shows_it(tmp_path: Path) -> None:
    """libpng skips an ancillary chunk whose CRC fails; Pillow refuses the file. aiscan
    drops the broken chunk and decodes the picture; a broken critical chunk stays an error."""
    from PIL import UnidentifiedImageError

    from aiscan.model.pixels import drop_broken_ancillary_chunks

    good = _png_with_text()
    broken = _break_crc(good, b"tEXt")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(broken))
    expected = load_pixels(good, SPEC).pixels
    path = tmp_path / "b.png"
    path.write_bytes(broken)
    for source in (broken, str(path)):
        np.testing.assert_array_equal(load_pixels(source, SPEC).pixels, expected)
    with path.open("rb") as fh:
        np.testing.assert_array_equal(load_pixels(fh, SPEC).pixels, expected)
    assert drop_broken_ancillary_chunks(good) is None  # nothing to drop
    assert drop_broken_ancillary_chunks(_break_crc(good, b"IDAT")) is None
    assert drop_broken_ancillary_chunks(broken[: len(broken) // 2]) is None
    with pytest.raises((UnidentifiedImageError, SyntaxError, OSError)):
        load_pixels(_break_crc(good, b"IHDR"), SPEC)


def _copy_recipe(data: bytes) -> np.ndarray:
    """train-v1/v2's copies (``build_from_mirror.py --normalise``): EXIF orientation, RGB,
    thumbnail 256 Lanczos, JPEG q85, as the pixels a decoder reads back."""
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as img:
        small = ImageOps.exif_transpose(img).convert("RGB")
        small.thumbnail((256, 256), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=85)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_the_canonical_step_gives_the_training_copies_pixels(fmt: str) -> None:
    """A full decode through the canonical step is the copy recipe, pixel for pixel; so a
    head fitted on such copies sees them again in a file sent as the original."""
    data = encode(photo(1200, 800), fmt)
    copy = _copy_recipe(data)
    spec = dataclasses.replace(clip.CANONICAL_PREPROCESSING, decode="full", resize="squash")
    spec = dataclasses.replace(spec, input_size=copy.shape[:2])
    np.testing.assert_array_equal(load_pixels(data, spec).pixels, copy)
    np.testing.assert_array_equal(reference_pixels(data, spec), copy)


def test_the_canonical_step_drafts_big_jpegs_at_twice_its_size() -> None:
    """Draft decoding with a canonical step stays about as close to the full decode as
    the native definition's draft does (the shrink starts from at least twice the
    canonical size); this noisy synthetic photo is a hard case for DCT scaling."""
    data = jpeg_bytes(photo(3000, 2000))

    def draft_gap(spec: Preprocessing) -> float:
        drafted = load_pixels(data, spec).pixels.astype(float)
        return float(np.abs(drafted - load_pixels(data, spec, decode="full").pixels).mean())

    assert draft_gap(clip.CANONICAL_PREPROCESSING) < 1.5 * draft_gap(clip.PREPROCESSING) + 0.5


@pytest.mark.parametrize(
    "size", [(3000, 2000), (2000, 3000), (257, 256), (256, 257), (1000, 3), (3, 1000), (300, 299)]
)
def test_canonical_size_is_the_size_pillows_thumbnail_gives(size: tuple[int, int]) -> None:
    """DALI shrinks to this size; the CPU path's thumbnail must agree to the pixel."""
    from aiscan.model.pixels import canonical_size

    img = Image.new("1", size)
    img.thumbnail((256, 256))
    assert canonical_size(size, clip.CANONICAL_PREPROCESSING) == img.size
    assert canonical_size((200, 100), clip.CANONICAL_PREPROCESSING) == (200, 100)  # never up
    assert canonical_size(size, clip.PREPROCESSING) == size  # no step: as it is
