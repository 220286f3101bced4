"""The CPU decode stage: one call per file, every outcome a value, never an exception."""

from __future__ import annotations

import builtins
import errno
import functools
import hashlib
import io
import os
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np
from PIL import UnidentifiedImageError, features

from aiscan.model.pixels import (
    DecodeBudget,
    DecodeLimits,
    ImageDataEndsEarlyError,
    ImageTooLargeError,
    Source,
    load_pixels,
    open_image,
    oriented_size,
)
from aiscan.model.preprocessing import DECODE_MODES, Preprocessing

from .discovery import Found
from .evidence import Evidence, read_evidence, with_anomalies
from .rows import Status
from .sniffing import SNIFF_BYTES, claims_image, describe_non_image, sniff

#: Formats that need an optional plugin, and how to get it.
_PLUGINS = {
    "HEIF": "pip install 'aiscan-batch[heif]' (pillow-heif)",
    "AVIF": "a Pillow built with AVIF",
}


@dataclass(eq=False)
class Item:
    """What decode learned about one file. ``pixels`` is set when status is "ok".

    Attributes:
        path: as discovered.
        status: "ok", "skipped" or "error".
        error: why it is not "ok", in words.
        pixels: uint8 (height, width, 3) model input, before normalisation.
        format: detected file format ("JPEG", "PNG"...), empty when unknown.
        width: image width after EXIF orientation.
        height: image height after EXIF orientation.
        bytes: file size.
        sha256: hex digest of the file, when hashing is on.
        encoded: the file's bytes, waiting for a batch decoder (DALI).
        tensor: normalised CHW float32 input, when a batch decoder produced it.
        evidence: provenance signals from the file's metadata.
        reused_p_ai: p_ai that the same model gave identical content before (state
            database): the file is not decoded again.
    """

    path: str
    status: Status = "ok"
    error: str = ""
    pixels: np.ndarray | None = None
    format: str = ""
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str = ""
    encoded: builtins.bytes | None = None  # (``bytes`` is a field name here)
    tensor: np.ndarray | None = None
    evidence: Evidence = field(default_factory=Evidence)
    reused_p_ai: float | None = None


@dataclass(frozen=True)
class Blob:
    """An image file held in memory.

    Attributes:
        path: the name its row shows (a file name, an upload id); its extension counts
            as a file's does (an image extension on non-image bytes is an error row).
        data: the file's bytes.
    """

    path: str
    data: builtins.bytes


@dataclass(eq=False)
class Batch:
    """Items on their way to inference, in input order.

    Attributes:
        items: every item of the batch, whatever its status.
        device: a GPU tensor (N, 3, H, W) holding the inputs of the items at
            ``on_device``, when a GPU batch decoder produced them; every other ready item
            carries host pixels.
        on_device: indices into ``items`` of the items whose inputs are rows of
            ``device``, in the same order.
    """

    items: list[Item]
    device: Any = None
    on_device: list[int] = field(default_factory=list)


class Claim(Protocol):
    """A batch decoder's per-file claim (the DALI path's :class:`~.dali.DaliClaim`).

    Given a sniffed file's whole bytes, it either takes the file for its batch decoder
    (sets ``item.encoded``, ``width``, ``height`` and ``format``) and returns True, or
    returns False and the file is decoded on the CPU as usual. It may raise as a decoder
    does: the file becomes an error row.
    """

    def __call__(self, item: Item, data: builtins.bytes, fmt: str) -> bool: ...


def plugin_for(path: str) -> None:
    """Register the Pillow plugin the file's format needs (HEIF: pillow-heif), when it is
    installed: what the scanner does before decoding, for callers of ``load_pixels`` on
    paths (training, feature extraction), so that they open every file the scan opens."""
    try:
        with open(path, "rb") as fh:
            fmt = sniff(fh.read(32))
    except OSError:
        return  # the decode that follows says why
    if fmt is not None:
        _plugin_available(fmt)


@functools.cache
def _plugin_available(fmt: str) -> bool:
    if fmt == "AVIF":
        return bool(features.check("avif"))
    if fmt == "HEIF":
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return False
        register_heif_opener()
        return True
    return True


def explain(exc: BaseException) -> str:
    """Turn a decoder's exception into an error a person understands."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ImageTooLargeError, ImageDataEndsEarlyError)):
        return text
    if isinstance(exc, FileNotFoundError):
        return "file disappeared before it could be read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, UnidentifiedImageError):
        return "image header is corrupt or not understood by the decoder"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    if isinstance(exc, OSError) and exc.errno == errno.EIO:
        return f"I/O error reading the file: {exc.strerror}"
    if "truncated" in text.lower():
        return f"truncated image data ({text})"
    if isinstance(exc, (OSError, SyntaxError, EOFError, struct.error, zlib.error, ValueError)):
        return f"corrupt image data ({type(exc).__name__}: {text})"
    return f"decoder failed ({type(exc).__name__}: {text})"


def _sha256(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


class CpuDecoder:
    """Decode stage: sniff, read, decode, resize. Thread-safe; configured once.

    Args:
        spec: the model's preprocessing.
        limits: input limits (pixels, file size, decode memory shared by all threads).
        hash_files: compute each file's sha256 (streamed: the file is read twice, never
            held whole for it).
        decode: "draft" or "full" JPEG decoding; default: the model's own (``spec.decode``),
            which is what training used (see :mod:`aiscan.model.pixels`).
        evidence: read provenance metadata (:mod:`aiscan.scanner.core.evidence`).
        claim: lets a batch decoder take files first; files are then read whole into
            memory before decoding.
        known: sha256 -> the p_ai tonight's model gave identical content before (a state
            run with hashing): an item it knows needs no inference.
    """

    def __init__(
        self,
        spec: Preprocessing,
        limits: DecodeLimits | None = None,
        *,
        hash_files: bool = False,
        decode: str | None = None,
        evidence: bool = True,
        claim: Claim | None = None,
        known: Callable[[str], float | None] | None = None,
    ) -> None:
        self.spec = spec
        self.evidence = evidence
        self.limits = limits or DecodeLimits()
        self.budget = DecodeBudget(self.limits.decode_memory)
        self.hash_files = hash_files
        self.decode = decode or spec.decode
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}")
        self.claim = claim
        self.known = known

    def __call__(self, found: Found) -> Item:
        item = Item(found.path)
        if found.error or found.skip_reason:
            item.status = "error" if found.error else "skipped"
            item.error = found.error or found.skip_reason
            return item
        try:
            self._decode_into(item)
        except Exception as exc:  # untrusted bytes meet C decoders: every failure is a row
            item.status, item.error, item.pixels = "error", explain(exc), None
        return item

    def decode_blob(self, blob: Blob) -> Item:
        """An image already in memory, decoded as a file of that name would be."""
        item = Item(blob.path)
        try:
            self._decode_open(item, io.BytesIO(blob.data), len(blob.data))
        except Exception as exc:  # see __call__
            item.status, item.error, item.pixels = "error", explain(exc), None
        return item

    def _decode_into(self, item: Item) -> None:
        with open(item.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                item.bytes = st.st_size
                item.status, item.error = "skipped", "not a regular file"
                return
            self._decode_open(item, fh, st.st_size)

    def _decode_open(self, item: Item, fh: BinaryIO, size: int) -> None:
        """Sniff, check, read evidence, hash and decode an open file of ``size`` bytes."""
        item.bytes = size
        head = fh.read(SNIFF_BYTES)
        fmt = sniff(head)
        if fmt is None:
            item.status = "error" if claims_image(item.path) else "skipped"
            item.error = describe_non_image(head, size)
            if item.status == "error":
                item.error = f"has an image extension but is not an image: {item.error}"
            return
        item.format = fmt
        if not _plugin_available(fmt):
            item.status = "error"
            item.error = f"{fmt} image, but no {fmt} decoder is installed: {_PLUGINS[fmt]}"
            return
        if size > self.limits.max_file_bytes:
            item.status = "error"
            item.error = (
                f"file is {size / 2**20:.0f} MB, over the limit of "
                f"{self.limits.max_file_bytes / 2**20:.0f} MB (see --max-file-size)"
            )
            return
        if self.evidence:
            item.evidence = read_evidence(fh, fmt)
        fh.seek(0)
        if self.hash_files:
            item.sha256 = _sha256(fh)
            fh.seek(0)
            if self.known is not None:
                item.reused_p_ai = self.known(item.sha256)
                if item.reused_p_ai is not None:  # judged by this model before
                    with open_image(fh) as img:
                        item.width, item.height = oriented_size(img)
                    return
        if self.claim is None:
            self._decode(item, fh, fmt)
            return
        data = fh.read()
        if not self.claim(item, data, fmt):
            self._decode(item, data, fmt)

    def _decode(self, item: Item, source: Source, fmt: str) -> None:
        """Decode a sniffed image into ``item.pixels``, on the CPU."""
        formats = None if fmt in _PLUGINS else [fmt]
        decoded = load_pixels(
            source,
            self.spec,
            limits=self.limits,
            decode=self.decode,
            formats=formats,
            budget=self.budget,
        )
        item.pixels = decoded.pixels
        item.width, item.height = decoded.width, decoded.height
        item.format = decoded.format
        if self.evidence:
            item.evidence = with_anomalies(item.evidence, decoded.anomalies)

    def decode_bytes(self, item: Item, data: bytes) -> None:
        """Decode bytes already read, on the CPU path, never claimed (status and error
        set on failure): a batch decoder's fallback for a batch it could not decode."""
        try:
            self._decode(item, data, sniff(data[:SNIFF_BYTES]) or "")
        except Exception as exc:  # see __call__
            item.status, item.error, item.pixels = "error", explain(exc), None
