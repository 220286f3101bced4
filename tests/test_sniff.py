from __future__ import annotations

import io

import pytest
from PIL import Image

from aiscan.scanner.core.sniffing import claims_image, describe_non_image, sniff


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_sniff_recognises_pillow_formats(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, fmt)
    assert sniff(buf.getvalue()[:32]) == fmt


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif", "AVIF"),
        (b"\x00\x00\x00\x18ftypmp42", None),
        (b"BMx\x00", None),
        (b"", None),
        (b"hello world", None),
        (b"%PDF-1.7", None),
    ],
)
def test_sniff_by_content(head: bytes, fmt: str | None) -> None:
    assert sniff(head) == fmt


def test_descriptions_say_what_the_file_is() -> None:
    assert describe_non_image(b"", 0) == "empty file (0 bytes)"
    assert "text" in describe_non_image(b"hello\n", 6)
    assert "PDF" in describe_non_image(b"%PDF-1.4", 100)
    assert "starts with 00 01" in describe_non_image(b"\x00\x01\x02", 3)


def test_image_extension_claim_is_case_insensitive() -> None:
    assert claims_image("x/IMG_1.JPG") and claims_image("a.webp")
    assert not claims_image("notes.txt") and not claims_image("jpg")
