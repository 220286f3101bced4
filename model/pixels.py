"""The one definition of how an image file becomes model input.

Training, export, the CPU scanner and the DALI path all take their parameters from a
:class:`Preprocessing` (stored in the ONNX model's metadata) and their pixels from this
module, so that the model sees at serving time what it saw in training.

The *reference* decode (:func:`reference_pixels`) is the plain, slow, exact definition:
full decode with Pillow, EXIF orientation applied, converted to RGB (alpha composited on a
fixed background, 16-bit reduced to 8-bit), resized with Pillow's antialiased filter.
The *draft* decode (``Preprocessing.decode == "draft"``, every model aiscan has shipped)
differs in one step only: a JPEG is decoded at a reduced scale in the DCT domain (libjpeg
``draft``), never below the size the final resize needs. ``tests/test_preprocess.py`` holds
the two within a stated tolerance. Training decodes as its model's definition says, so a
scan that follows the definition gives the model the pixels it was trained on, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .preprocessing import DECODE_MODES, Preprocessing

#: Pillow's filter for each of :data:`~aiscan.model.preprocessing.INTERPOLATION_NAMES`.
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against hostile input.

    Attributes:
        max_pixels: images with more pixels than this (width x height, read from the header
            before decoding) are refused as possible decompression bombs.
        max_file_bytes: files larger than this are refused before they are read.
        decode_memory: bytes that the decodes running at once may hold together (see
            :class:`DecodeBudget`); an image that needs more on its own is refused.
    """

    max_pixels: int = 250_000_000
    max_file_bytes: int = 512 * 2**20
    decode_memory: int = 1024 * 2**20


class ImageTooLargeError(ValueError):
    """The header announces more than :class:`DecodeLimits` allows."""


class ImageDataEndsEarlyError(ValueError):
    """The file is too small to hold the image its header announces."""


#: No complete JPEG holds fewer bytes than pixels / 512: baseline or progressive, every
#: 8x8 block of every component costs at least a bit or two (a 12 MP JPEG of one flat
#: colour is tens of KB). A header that claims more is lying about data that is missing,
#: which libjpeg would fill with grey without an error.
JPEG_MIN_BYTES_PER_PIXEL = 1 / 512


class DecodeBudget:
    """Memory that concurrent decodes may hold together, in bytes.

    A decode reserves its estimate (:func:`decode_estimate`) before it starts and returns it
    when done; when the budget is spent, further decodes wait. So a tree of huge images
    is decoded one or two at a time, not one per thread, and peak memory stays near the
    budget. Thread-safe.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"decode memory budget must be positive, got {total}")
        self.total = total
        self._free = total
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.total:
            raise ImageTooLargeError(
                f"decoding this image needs about {nbytes / 2**20:.0f} MB, over the decode "
                f"memory budget of {self.total / 2**20:.0f} MB (see --decode-memory)"
            )
        with self._cond:
            self._cond.wait_for(lambda: self._free >= nbytes)
            self._free -= nbytes
        try:
            yield
        finally:
            with self._cond:
                self._free += nbytes
                self._cond.notify_all()


def decode_estimate(img: Image.Image) -> int:
    """Estimated peak bytes to decode ``img`` at its current (possibly drafted) size and
    turn it into RGB: the decoded image in Pillow's storage (4 bytes a pixel for every
    multi-band 8-bit mode) plus two 4-byte copies (conversion, alpha compositing)."""
    w, h = img.size
    stored = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
    return w * h * (stored.get(img.mode, 4) + 8)


@dataclass(frozen=True)
class Decoded:
    """One decoded image, resized and ready to normalise.

    Attributes:
        pixels: uint8 array (height, width, 3) of the model's input size.
        width: the file's width after EXIF orientation.
        height: the file's height after EXIF orientation.
        format: Pillow's name for the file format.
        anomalies: metadata that had to be set aside to decode the pixels (unreadable
            EXIF, PNG chunks past Pillow's guards...), in words: hiding metadata is a
            signal, and the scanner reports it beside the verdict.
    """

    pixels: np.ndarray
    width: int
    height: int
    format: str
    anomalies: tuple[str, ...] = ()


Source = str | bytes | BinaryIO


def open_image(source: Source, formats: list[str] | None = None) -> Image.Image:
    """Open (not decode) an image from a path, an open binary file or bytes already read.

    aiscan enforces its own pixel limit (:class:`DecodeLimits`, checked by
    :func:`check_limits`) with a clear message; Pillow's process-wide one would warn or
    refuse first, with another. So the first image aiscan opens lifts Pillow's limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) for the process: decoding with aiscan changes it,
    importing aiscan does not.
    """
    if Image.MAX_IMAGE_PIXELS is not None:
        Image.MAX_IMAGE_PIXELS = None
    fp: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    start = fp.tell() if hasattr(fp, "tell") else 0
    try:
        return Image.open(fp, formats=formats)
    except (UnidentifiedImageError, SyntaxError):
        repaired = _repaired_png(source, start)
        if repaired is None:
            raise
        return Image.open(io.BytesIO(repaired), formats=["PNG"])


#: PNGs up to this size are read whole to drop broken ancillary chunks (larger ones keep
#: Pillow's refusal).
PNG_REPAIR_MAX_BYTES = 64 * 2**20


def drop_broken_ancillary_chunks(data: bytes) -> bytes | None:
    """``data`` without the ancillary PNG chunks whose CRC is wrong, or None when there is
    none to drop (or it is not a whole PNG, or a critical chunk is broken).

    libpng, and so every browser, skips an ancillary chunk (tEXt, iTXt, eXIf...: the
    lowercase first letter) whose checksum fails and shows the picture; Pillow refuses the
    whole file. Tools that edit PNG text in place leave such files behind (13 of 20
    ComfyUI example outputs in train-v3), so aiscan decodes them as a browser does. One
    pass over the chunks, linear in the file's size.
    """
    import zlib

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out, pos, dropped = [data[:8]], 8, False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            return None
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        good = zlib.crc32(kind + body) == int.from_bytes(data[end - 4 : end], "big")
        if not good and not kind[0] & 0x20:
            return None  # a broken critical chunk: the picture itself is damaged
        if good:
            out.append(data[pos:end])
        dropped |= not good
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out) if dropped else None


def _repaired_png(source: Source, start: int) -> bytes | None:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str):
        if os.path.getsize(source) > PNG_REPAIR_MAX_BYTES:
            return None
        with open(source, "rb") as fh:
            data = fh.read()
    else:
        source.seek(start)
        data = source.read(PNG_REPAIR_MAX_BYTES + 1)
        if len(data) > PNG_REPAIR_MAX_BYTES:
            return None
    return drop_broken_ancillary_chunks(data)


def check_limits(img: Image.Image, limits: DecodeLimits, file_bytes: int | None = None) -> None:
    """Refuse, from the header alone, what must not be decoded.

    Args:
        img: an opened, not yet decoded image.
        limits: the limits.
        file_bytes: the file's size, when known: a JPEG too small for its announced
            size is refused (:data:`JPEG_MIN_BYTES_PER_PIXEL`).
    """
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ValueError(f"image header gives an empty size {w}x{h}")
    if w * h > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {w}x{h} = {w * h / 1e6:.0f} MP, over the limit of "
            f"{limits.max_pixels / 1e6:.0f} MP (possible decompression bomb; see --max-pixels)"
        )
    if file_bytes is not None and is_jpeg(img):
        needed = int(w * h * JPEG_MIN_BYTES_PER_PIXEL)
        if file_bytes < needed:
            raise ImageDataEndsEarlyError(
                f"JPEG data ends early: the header announces {w}x{h}, which needs at least "
                f"{needed} bytes, but the file has {file_bytes}"
            )


def source_bytes(source: Source) -> int | None:
    """The size of a path, an open file or bytes; None when it cannot be told."""
    try:
        if isinstance(source, bytes):
            return len(source)
        if isinstance(source, str):
            return os.path.getsize(source)
        return os.fstat(source.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


def draft_request(size: tuple[int, int], spec: Preprocessing) -> tuple[int, int]:
    """Smallest decode size that still covers the model input in both axes.

    Orientation may swap the axes later, so both get the larger side of the input. With
    a canonical step, the decode covers twice its size instead (what Pillow's own
    ``thumbnail`` asks of a JPEG: its ``reducing_gap`` of 2), so the canonical copy
    does not depend on whether the resize started from a drafted image.
    """
    side = max(*spec.input_size, 2 * spec.canonical_size)
    return (min(size[0], side), min(size[1], side))


#: The ``reducing_gap`` of the canonical shrink (Pillow's ``thumbnail`` default).
CANONICAL_REDUCING_GAP = 2.0


def canonical_size(size: tuple[int, int], spec: Preprocessing) -> tuple[int, int]:
    """(width, height) of the canonical copy of an image of ``size``: the size Pillow's
    ``thumbnail`` gives, aspect kept to the nearest pixel, never enlarged, at least 1.
    For decoders that shrink without Pillow (DALI); ``size`` when there is no step."""
    w, h = size
    box = spec.canonical_size
    if not spec.canonical or (w <= box and h <= box):
        return size
    aspect = w / h

    def nearest(value: float, error: Callable[[int], float]) -> int:
        lo, hi = math.floor(value), math.ceil(value)
        return max(lo if error(lo) <= error(hi) else hi, 1)

    if aspect <= 1:  # at most as wide as tall: the height is the box's
        return nearest(box * aspect, lambda n: abs(aspect - n / box)), box
    return box, nearest(box / aspect, lambda n: abs(aspect - box / n) if n else math.inf)


def canonicalise(img: Image.Image, spec: Preprocessing) -> Image.Image:
    """The canonical copy of an RGB image (see ``Preprocessing.canonical_size``): shrunk
    to fit ``canonical_size`` square (Pillow's ``thumbnail``, Lanczos, aspect kept, never
    enlarged), JPEG-encoded at ``canonical_quality`` (Pillow's defaults otherwise: 4:2:0
    chroma, no optimisation, no metadata) and decoded again. Deterministic for one
    Pillow/libjpeg build; a definition without the step returns ``img`` itself.
    Shrinks ``img`` in place, as ``thumbnail`` does: pass a copy to keep it."""
    if not spec.canonical:
        return img
    img.thumbnail(
        (spec.canonical_size, spec.canonical_size),
        Image.Resampling.LANCZOS,
        reducing_gap=CANONICAL_REDUCING_GAP,
    )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=spec.canonical_quality)
    with Image.open(io.BytesIO(buf.getvalue()), formats=["JPEG"]) as coded:
        return coded.convert("RGB")


def to_rgb(img: Image.Image, background: int) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Palette and alpha images are composited on a flat ``background`` grey (the colour
    stored under transparent pixels is arbitrary); 16- and 32-bit greyscale keep their
    top 8 bits instead of saturating, as Pillow's own ``convert`` would.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.uint32)
        peak = 65535 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        arr8 = (np.clip(arr, 0, peak) * (255.0 / peak) + 0.5).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        arr8 = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha or (img.mode == "L" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


Box = tuple[float, float, float, float]
#: Chooses the source region (left, top, right, bottom) to resize, from the decoded
#: image's (width, height) and the preprocessing; training passes a random one.
RegionFn = Callable[[tuple[int, int], "Preprocessing"], Box]


def view_region(size: tuple[int, int], spec: Preprocessing, pos: float = 0.5) -> Box:
    """The region of ``size`` that the resize policy maps onto the model input.

    "squash": the whole image. "crop": the largest region with the input's aspect ratio,
    placed at ``pos`` along the axis where it has room (0: left or top, 0.5: centred,
    1: right or bottom). Fractional edges are kept: Pillow and DALI both resample a
    fractional region exactly, so no rounding differs between decoders.
    """
    w, h = size
    if spec.resize == "squash":
        return (0.0, 0.0, float(w), float(h))
    out_h, out_w = spec.input_size
    if w * out_h <= h * out_w:  # full width, exactly (no rounding past the edge)
        cw, ch = float(w), w * out_h / out_w
    else:
        cw, ch = h * out_w / out_h, float(h)
    left, top = (w - cw) * pos, (h - ch) * pos
    return (left, top, left + cw, top + ch)


def centre_region(size: tuple[int, int], spec: Preprocessing) -> Box:
    """The region the scanner resizes: :func:`view_region` centred."""
    return view_region(size, spec, 0.5)


def _finish(
    img: Image.Image, spec: Preprocessing, region: RegionFn | None = None
) -> tuple[Image.Image, int, int]:
    """Orientation, colour conversion and resize: the steps every path shares."""
    if _orientation(img) in (2, 3, 4, 5, 6, 7, 8):  # else no copy is needed
        img = ImageOps.exif_transpose(img)
    width, height = img.size
    img = canonicalise(to_rgb(img, spec.background), spec)
    h, w = spec.input_size
    box = (region or centre_region)(img.size, spec)
    if img.size != (w, h) or box != (0.0, 0.0, float(img.width), float(img.height)):
        img = img.resize((w, h), INTERPOLATIONS[spec.interpolation], box=box)
    return img, width, height


def is_jpeg(img: Image.Image) -> bool:
    """JPEG-coded, whatever Pillow calls it: plain JPEG, or MPO (multi-picture JPEG, as
    many cameras and phones write; its first picture is what is decoded)."""
    return isinstance(img, JpegImagePlugin.JpegImageFile)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent, or when the EXIF cannot be read: junk
    EXIF must never keep the pixels from the model). Never decodes pixels: Pillow's PNG
    reader would decode the whole image to look for an eXIf chunk after the image data,
    so a PNG's orientation comes from the chunks read so far: an eXIf chunk before the
    image data (where the PNG specification puts it) before decoding, any one after."""
    return exif_orientation(img)[0]


def exif_orientation(img: Image.Image) -> tuple[int, str]:
    """(orientation, anomaly): the EXIF orientation tag as :func:`_orientation` reads it,
    and "" or, for EXIF that is present but cannot be read, what is wrong with it."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1, ""
    raw = img.info.get("exif")
    try:
        exif = img.getexif()
        value = int(exif.get(0x0112, 1))
    except Exception as exc:  # untrusted metadata: any parser error means "unreadable"
        return 1, f"EXIF unreadable ({type(exc).__name__}), orientation taken as 1"
    if isinstance(raw, bytes) and len(raw) > 14 and not len(exif):
        return 1, f"EXIF of {len(raw)} bytes holds no readable tag"
    return (value if 1 <= value <= 8 else 1), ""


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """Image size after EXIF orientation, from the header alone."""
    w, h = img.size
    return (h, w) if _orientation(img) in (5, 6, 7, 8) else (w, h)


def load_pixels(
    source: Source,
    spec: Preprocessing,
    *,
    limits: DecodeLimits | None = None,
    decode: str | None = None,
    formats: list[str] | None = None,
    region: RegionFn | None = None,
    budget: DecodeBudget | None = None,
) -> Decoded:
    """Decode ``source`` into model-sized RGB pixels.

    Args:
        source: file path, open binary file, or the whole file's bytes.
        spec: the model's preprocessing.
        limits: refuse images over these limits before decoding them.
        decode: "draft" or "full" (see the module docstring); default: the model's own,
            ``spec.decode``.
        formats: Pillow format names to try, e.g. from :func:`aiscan.scanner.core.sniffing.sniff`.
        region: picks the source region to resize (default :func:`centre_region`, what the
            scanner uses; training passes random regions of the same policy).
        budget: memory shared with concurrent decodes (default: this decode alone,
            within ``limits.decode_memory``).

    Raises:
        ImageTooLargeError: the header announces too many pixels, or more than the
            memory budget.
        ImageDataEndsEarlyError: a JPEG too small for the size its header announces.
        OSError, ValueError, and whatever else a decoder raises on corrupt data.
    """
    limits = limits or DecodeLimits()
    mode = decode or spec.decode
    if mode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {mode!r}")
    args = (spec, limits, mode, formats, region, budget)
    try:
        return _load(source, *args)
    except _NOT_METADATA:
        raise
    except (ValueError, SyntaxError, OSError, EOFError, struct.error) as exc:
        stripped = _pixels_only(source)
        if stripped is None:
            raise
        try:
            decoded = _load(stripped, *args)
        except Exception:
            raise exc from None  # the pixels themselves are broken: the first error says so
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
        note = f"metadata set aside to decode the pixels ({why})"
        return dataclasses.replace(decoded, anomalies=(note, *decoded.anomalies))


#: Errors that are about the image itself, never about its metadata: no retry.
_NOT_METADATA = (ImageTooLargeError, ImageDataEndsEarlyError)


def _load(
    source: Source,
    spec: Preprocessing,
    limits: DecodeLimits,
    mode: str,
    formats: list[str] | None,
    region: RegionFn | None,
    budget: DecodeBudget | None,
) -> Decoded:
    with open_image(source, formats) as img:
        check_limits(img, limits, source_bytes(source))
        fmt = img.format or "unknown"
        stored = img.size
        if mode == "draft" and is_jpeg(img):
            img.draft("RGB", draft_request(img.size, spec))
        with (budget or DecodeBudget(limits.decode_memory)).reserve(decode_estimate(img)):
            img.load()
            orientation, anomaly = exif_orientation(img)
            out, _, _ = _finish(img, spec, region)
            turned = orientation in (5, 6, 7, 8)
            true_w, true_h = (stored[1], stored[0]) if turned else stored
            return Decoded(np.asarray(out), true_w, true_h, fmt, (anomaly,) if anomaly else ())


#: The PNG chunks a picture needs: the critical ones, and transparency.
_PIXEL_CHUNKS = (b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS")


def pixels_only_png(data: bytes) -> bytes | None:
    """``data`` (a PNG) with every ancillary chunk dropped but transparency (``tRNS``):
    text, compressed text, XMP, ICC profiles, EXIF and unknown chunks go, the picture
    stays. None when it is not a whole PNG, a critical chunk is unknown or broken, or
    there is nothing to drop. One pass, linear in the file's size."""
    import zlib

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out, pos, dropped = [data[:8]], 8, False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            return None
        kind = data[pos + 4 : pos + 8]
        if kind in _PIXEL_CHUNKS:
            crc = zlib.crc32(data[pos + 4 : end - 4])
            if crc != int.from_bytes(data[end - 4 : end], "big") and kind != b"tRNS":
                return None  # a broken critical chunk: the picture itself is damaged
            out.append(data[pos:end])
        elif not kind[0] & 0x20:
            return None  # an unknown critical chunk: not a picture Pillow reads anyway
        else:
            dropped = True
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out) if dropped else None


def _pixels_only(source: Source) -> bytes | None:
    """The bytes of ``source`` with the metadata that can stop a decoder set aside, or
    None where there is none to set aside (not a PNG, or a PNG without it). Larger
    files than :data:`PNG_REPAIR_MAX_BYTES` keep the decoder's refusal."""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            if isinstance(source, str):
                if os.path.getsize(source) > PNG_REPAIR_MAX_BYTES:
                    return None
                with open(source, "rb") as fh:
                    data = fh.read()
            else:
                source.seek(0)
                data = source.read(PNG_REPAIR_MAX_BYTES + 1)
                if len(data) > PNG_REPAIR_MAX_BYTES:
                    return None
        except OSError:
            return None
    return pixels_only_png(data)


def reference_pixels(source: Source, spec: Preprocessing) -> np.ndarray:
    """The reference preprocessing: full decode, no shortcuts. Slow; for tests and audits."""
    with open_image(source) as img:
        img.load()
        out, _, _ = _finish(img, spec)
        return np.asarray(out)


def fixed_batches(batch: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``batch`` in runs of exactly ``size`` images for a model with a fixed batch axis:
    each run with how many of its images are real (the last run is filled with zeros)."""
    for start in range(0, len(batch), size):
        chunk = batch[start : start + size]
        real = len(chunk)
        if real < size:
            chunk = np.concatenate([chunk, np.zeros((size - real, *chunk.shape[1:]), chunk.dtype)])
        yield chunk, real


def normalize_batch(images: list[np.ndarray], spec: Preprocessing) -> np.ndarray:
    """Stack uint8 HWC images into a float32 NCHW batch, scaled and normalised."""
    batch = np.stack(images).astype(np.float32)
    scale = np.asarray([1.0 / (255.0 * s) for s in spec.std], dtype=np.float32)
    shift = np.asarray([-m / s for m, s in zip(spec.mean, spec.std, strict=True)], dtype=np.float32)
    batch *= scale
    batch += shift
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
