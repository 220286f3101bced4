"""Recognise image files by their first bytes, not by their names."""

from __future__ import annotations

from pathlib import Path

#: How many leading bytes :func:`sniff` needs.
SNIFF_BYTES = 32

#: Extensions that claim a file is an image. A file with one of these whose content is not
#: an image is an error (a broken upload); any other non-image file is merely skipped.
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".gif",
        ".heic",
        ".heif",
        ".avif",
    ]
)

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff(head: bytes) -> str | None:
    """Return the image format that ``head`` starts with, or None.

    Names follow Pillow's ``Image.format`` ("JPEG", "PNG", ...), plus "HEIF" and "AVIF".
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 18:
        # BITMAPFILEHEADER: the DIB header size at offset 14 is one of a few known values.
        dib = int.from_bytes(head[14:18], "little")
        if dib in (12, 40, 52, 56, 64, 108, 124):
            return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
    return None


def claims_image(path: str) -> bool:
    """True when the file name has an image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def describe_non_image(head: bytes, size: int) -> str:
    """A short, human description of why ``head`` is not a supported image."""
    if size == 0:
        return "empty file (0 bytes)"
    if head[4:8] == b"ftyp":
        return f"ISO media file of brand {head[8:12].decode('latin-1')!r}, not a still image"
    if head.startswith(b"%PDF"):
        return "PDF document, not an image"
    sample = head[:16]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "text content, not an image"
    return f"unrecognised content (starts with {sample[:8].hex(' ')})"
