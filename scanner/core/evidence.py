"""Provenance evidence beside the pixels: C2PA, IPTC digital source type, generator
metadata, camera EXIF. Read from headers and chunks only; the pixels are never decoded
for it.

What each signal proves (the README says it too): metadata is trivially stripped or
forged, so its absence means nothing and its presence is a claim, not a proof; camera
EXIF never proves an image real; a valid C2PA signature proves who signed the manifest
and that the file is unchanged since, not that what the manifest says is true. A
manifest that fails validation (a tampered file) is reported as such and is never taken
as evidence of anything.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image

from aiscan.model.pixels import open_image

#: The values of the ``evidence`` column, strongest first.
KINDS = (
    "ai-declared",
    "c2pa-invalid",
    "metadata-anomaly",
    "c2pa-signed",
    "c2pa-unverified",
    "camera-claimed",
    "none",
)
#: Metadata that could not be read, or that had to be set aside before the pixels could
#: be decoded (oversized or malformed text chunks, ICC profiles, EXIF, XMP): never a
#: reason to leave an image unjudged, and a signal of its own (an uploader may hide
#: pixels from a detector that way), so the evidence columns say so.
ANOMALY = "metadata-anomaly"

#: IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/) that mean
#: the image was made by an algorithm, wholly or in part.
AI_SOURCE_TYPES = (
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
    "algorithmicMedia",
    "compositeSynthetic",
)

#: Substrings of EXIF/XMP ``Software`` (lower case) that name an image generator.
GENERATOR_SOFTWARE = {
    "novelai": "NovelAI",
    "stable diffusion": "Stable Diffusion",
    "comfyui": "ComfyUI",
    "invokeai": "InvokeAI",
    "fooocus": "Fooocus",
    "midjourney": "Midjourney",
    "dall-e": "DALL-E",
    "dall·e": "DALL-E",
    "firefly": "Adobe Firefly",
    "imagen": "Google Imagen",
    "leonardo": "Leonardo.Ai",
    "ideogram": "Ideogram",
    "flux": "FLUX",
}

#: ... and editors: reported as context in the detail, never as evidence of AI.
EDITOR_SOFTWARE = ("photoshop", "lightroom", "gimp", "affinity", "capture one", "snapseed")

_DETAIL_MAX = 400
_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}
#: ISO BMFF formats: the C2PA store is a top-level ``uuid`` box with this user type.
_BMFF = ("HEIF", "AVIF")
_C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
#: Bounds on untrusted metadata, so that every parser here is linear in its input and
#: short: bytes of an XMP packet read, bytes looked at after a DigitalSourceType name,
#: length of a value taken from it, characters of a text chunk searched.
_XMP_MAX = 1 << 20
_DST_WINDOW = 512
_VALUE_MAX = 256
_TEXT_MAX = 1 << 20


@dataclass(frozen=True)
class Evidence:
    """What a file's own metadata says about where it came from.

    Attributes:
        kind: one of :data:`KINDS`.
        detail: the signals found, in words (empty for "none").
        generator: the generator or tool the metadata names, when it names one.
    """

    kind: str = "none"
    detail: str = ""
    generator: str = ""


@dataclass
class _Signals:
    c2pa: str = ""  # "", "ai", "signed", "invalid", "unverified"
    c2pa_detail: str = ""
    c2pa_generator: str = ""
    xmp_ai: str = ""
    xmp_other: str = ""
    generator_detail: str = ""
    generator: str = ""
    editor: str = ""
    camera: str = ""


def read_evidence(fh: BinaryIO, fmt: str) -> Evidence:
    """Read provenance signals from an open image file (left at an unspecified position).

    Args:
        fh: the file, opened in binary mode and seekable.
        fmt: the sniffed format ("JPEG", "PNG", "WEBP"...).
    """
    sig = _Signals()
    if fmt in _BMFF:  # read without Pillow: a HEIF opener may not be registered
        try:
            if _bmff_has_c2pa(fh):
                fh.seek(0)
                _read_c2pa(fh, fmt, sig)
        except Exception as exc:
            return Evidence(
                ANOMALY, _short(f"metadata could not be read ({type(exc).__name__}: {exc})")
            )
    fh.seek(0)
    try:
        img = open_image(fh)
    except Exception:  # the decode stage reports unreadable files
        return _decide(sig) if sig.c2pa else Evidence()
    with img:
        try:
            if _has_c2pa(img, fh, fmt):
                fh.seek(0)
                _read_c2pa(fh, fmt, sig)
            _read_xmp(img, sig)
            _read_generator_metadata(img, sig)
            _read_editor(img, sig)
            _read_camera(img, sig)
        except Exception as exc:  # metadata is untrusted input too; the pixels still count
            return Evidence(
                ANOMALY, _short(f"metadata could not be read ({type(exc).__name__}: {exc})")
            )
    return _decide(sig)


def _exif(img: Image.Image) -> Image.Exif:
    """The EXIF of an opened image without decoding it (Pillow's PNG reader would decode
    the whole image to look for an eXIf chunk after the pixels)."""
    if img.format == "PNG" and "exif" not in img.info:
        return Image.Exif()
    return img.getexif()


def _has_c2pa(img: Image.Image, fh: BinaryIO, fmt: str) -> bool:
    """A C2PA manifest store is embedded: JPEG APP11 JUMBF, PNG caBX, WebP C2PA chunk
    (HEIF and AVIF are looked at before Pillow opens the file: :func:`_bmff_has_c2pa`)."""
    if fmt == "JPEG":
        return any(m == "APP11" and d[:2] == b"JP" for m, d in getattr(img, "applist", []))
    if fmt == "PNG":
        return b"caBX" in _chunk_types(fh, "png")
    if fmt == "WEBP":
        return b"C2PA" in _chunk_types(fh, "riff")
    return False


def _bmff_has_c2pa(fh: BinaryIO) -> bool:
    """Whether an ISO BMFF file (HEIF, AVIF) has a top-level C2PA ``uuid`` box, found by
    seeking from box header to box header (32- or 64-bit sizes; 0 runs to the end)."""
    fh.seek(0)
    for _ in range(10_000):
        start = fh.tell()
        head = fh.read(8)
        if len(head) < 8:
            return False
        size, kind = int.from_bytes(head[:4], "big"), head[4:]
        if size == 1:
            large = fh.read(8)
            if len(large) < 8:
                return False
            size = int.from_bytes(large, "big")
        if kind == b"uuid" and fh.read(16) == _C2PA_UUID:
            return True
        if size < 8:  # 0: the last box, to the end of the file; below 8: malformed
            return False
        fh.seek(start + size)
    return False


def _chunk_types(fh: BinaryIO, layout: str) -> set[bytes]:
    """The chunk types of a PNG (length, type, data, CRC) or RIFF/WebP (type, length,
    data, pad byte) file, found by seeking over the data, which is never read."""
    found: set[bytes] = set()
    fh.seek(8 if layout == "png" else 12)
    for _ in range(100_000):
        head = fh.read(8)
        if len(head) < 8:
            break
        if layout == "png":
            size, kind, skip = int.from_bytes(head[:4], "big"), head[4:], 4
        else:
            kind, size = head[:4], int.from_bytes(head[4:], "little")
            skip = size % 2
        found.add(kind)
        fh.seek(size + skip, io.SEEK_CUR)
    return found


def _read_c2pa(fh: BinaryIO, fmt: str, sig: _Signals) -> None:
    try:
        import c2pa
    except ImportError:
        sig.c2pa = "unverified"
        sig.c2pa_detail = (
            "C2PA manifest present but not validated: pip install 'aiscan-batch[evidence]' "
            "(c2pa-python)"
        )
        return
    try:
        with c2pa.Reader(_MIME[fmt], fh) as reader:
            state = reader.get_validation_state()
            store = json.loads(reader.json())
    except Exception as exc:  # a malformed store is a finding, not a crash
        if "ManifestNotFound" in type(exc).__name__:
            return  # a JUMBF box that holds no C2PA manifest (JPEG XT and others use them)
        sig.c2pa, sig.c2pa_detail = "invalid", f"C2PA manifest cannot be read ({exc})"
        return
    manifest = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    codes = [s.get("code", "") for s in store.get("validation_status") or []]
    failures = [c for c in codes if c != "signingCredential.untrusted"]
    signer = (manifest.get("signature_info") or {}).get("common_name", "unknown signer")
    sig.c2pa_generator = _claim_generator(manifest)
    if state == "Invalid" or failures:
        sig.c2pa = "invalid"
        sig.c2pa_detail = f"C2PA manifest fails validation ({', '.join(failures) or state})"
        return
    trust = "on a trust list" if state == "Trusted" else "not on a trust list"
    head = f"C2PA manifest, valid, signed by '{signer}' ({trust})"
    ai = _ai_actions(manifest)
    sig.c2pa = "ai" if ai else "signed"
    tail = f"; claim generator {sig.c2pa_generator}" if sig.c2pa_generator else ""
    sig.c2pa_detail = f"{head}: {'; '.join(ai)}{tail}" if ai else f"{head}{tail}"


def _claim_generator(manifest: dict[str, Any]) -> str:
    info = manifest.get("claim_generator_info") or []
    if info and isinstance(info[0], dict):
        return " ".join(str(info[0].get(k, "")) for k in ("name", "version")).strip()
    return str(manifest.get("claim_generator", ""))


def _ai_actions(manifest: dict[str, Any]) -> list[str]:
    """Actions of the manifest whose digital source type is algorithmic."""
    out = []
    for assertion in manifest.get("assertions", []):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions", []):
            source = str(action.get("digitalSourceType", "")).rsplit("/", 1)[-1]
            if source in AI_SOURCE_TYPES:
                agent = action.get("softwareAgent") or {}
                name = agent.get("name", "") if isinstance(agent, dict) else str(agent)
                by = f" by {name}" if name else ""
                out.append(f"{action.get('action', 'action')} ({source}){by}")
    return out


def _read_xmp(img: Image.Image, sig: _Signals) -> None:
    raw = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    for found in _source_types(raw[:_XMP_MAX]):
        value = found.decode("utf-8", "replace").rsplit("/", 1)[-1]
        if value in AI_SOURCE_TYPES:
            sig.xmp_ai = f"XMP Iptc4xmpExt:DigitalSourceType = {value}"
        elif value:
            sig.xmp_other = f"XMP Iptc4xmpExt:DigitalSourceType = {value}"


def _source_types(xmp: bytes) -> list[bytes]:
    """The values of every ``DigitalSourceType`` in an XMP packet, as attribute
    (``DigitalSourceType="..."``) or element (``<...DigitalSourceType>...``): a scan, not a
    regular expression, linear in the packet whatever it repeats."""
    lowered, name, out = xmp.lower(), b"digitalsourcetype", []
    start = lowered.find(name)
    while start >= 0:
        after = start + len(name)
        value = _value_after(xmp[after : after + _DST_WINDOW])
        if value:
            out.append(value)
        start = lowered.find(name, after)
    return out


def _value_after(window: bytes) -> bytes:
    """The value that follows a name: after ``="`` / ``='`` or after ``>``, up to a quote,
    ``<`` or white space (at most :data:`_VALUE_MAX` bytes); empty when none does."""
    close = window.find(b">")
    limit = len(window) if close < 0 else close
    eq = window.find(b"=", 0, limit)
    rest = None
    while eq >= 0:
        after = window[eq + 1 :].lstrip()
        if after[:1] in (b'"', b"'"):
            rest = after[1:]
            break
        eq = window.find(b"=", eq + 1, limit)
    if rest is None:
        if close < 0:
            return b""
        rest = window[close + 1 :].lstrip()
    end = len(rest)
    for stop in (b'"', b"'", b"<", b" ", b"\t", b"\r", b"\n"):
        at = rest.find(stop, 0, end)
        if at >= 0:
            end = at
    return rest[: min(end, _VALUE_MAX)]


def _sd_parameters(text: str) -> bool:
    """Stable Diffusion WebUI's parameters: ``Steps: <digits>`` and, after it,
    ``Sampler: `` (plain searches, linear; a regular expression with ``.*`` between the two
    was quadratic on a text that repeats ``Steps: 1``)."""
    text = text[:_TEXT_MAX]
    at = text.find("Steps: ")
    while at >= 0 and not text[at + 7 : at + 8].isdigit():
        at = text.find("Steps: ", at + 7)
    return at >= 0 and text.find("Sampler: ", at) >= 0


def _model_name(text: str) -> str:
    """The value of ``Model: `` in SD parameters, up to a comma or line end (short)."""
    at = text[:_TEXT_MAX].find("Model: ")
    if at < 0:
        return ""
    value = text[at + 7 : at + 7 + _VALUE_MAX]
    return value.split(",", 1)[0].split("\n", 1)[0].strip()


#: PNG text chunks that generators write: key -> (generator, is the key alone enough).
_PNG_KEYS: dict[str, tuple[str, bool]] = {
    "parameters": ("Stable Diffusion WebUI", False),  # also Forge, SD.Next, Fooocus
    "prompt": ("ComfyUI", False),
    "workflow": ("ComfyUI", False),
    "invokeai_metadata": ("InvokeAI", True),
    "invokeai_graph": ("InvokeAI", True),
    "sd-metadata": ("InvokeAI", True),
    "Dream": ("InvokeAI", True),
    "fooocus_scheme": ("Fooocus", True),
    "aigc": ("AIGC label", True),
    "AIGC": ("AIGC label", True),
}


def _read_generator_metadata(img: Image.Image, sig: _Signals) -> None:
    checks: list[Callable[[Image.Image], tuple[str, str] | None]] = [
        _png_text,
        _exif_parameters,
        _software,
    ]
    for check in checks:
        found = check(img)
        if found:
            sig.generator, sig.generator_detail = found
            return


def _png_text(img: Image.Image) -> tuple[str, str] | None:
    for key, (name, alone) in _PNG_KEYS.items():
        value = img.info.get(key)
        if not isinstance(value, str):
            continue
        if key == "parameters" and _sd_parameters(value):
            model = _model_name(value)
            tool = "Fooocus" if "Fooocus" in value[:_TEXT_MAX] else name
            hint = f"{tool} (model {_short(model, 80)})" if model else tool
            return hint, f"PNG text chunk 'parameters': {_short(value)}"
        if key in ("prompt", "workflow") and _looks_like_comfy(value):
            return name, f"PNG text chunk '{key}': ComfyUI node graph"
        if alone:
            return name, f"PNG text chunk '{key}': {_short(value)}"
    comment = img.info.get("Comment")
    if isinstance(comment, str) and '"sampler"' in comment and '"steps"' in comment:
        return "NovelAI", f"PNG text chunk 'Comment': {_short(comment)}"
    return None


def _looks_like_comfy(text: str) -> bool:
    try:
        graph = json.loads(text)
    except ValueError:
        return False
    nodes = graph.values() if isinstance(graph, dict) else []
    return any(isinstance(n, dict) and "class_type" in n for n in nodes) or (
        isinstance(graph, dict) and "nodes" in graph and "links" in graph
    )


def _exif_parameters(img: Image.Image) -> tuple[str, str] | None:
    """Stable Diffusion WebUI writes its parameters into EXIF UserComment (JPEG, WebP)."""
    raw = _exif(img).get_ifd(0x8769).get(0x9286)  # Exif IFD, UserComment
    if isinstance(raw, bytes):
        text = raw[8:].decode("utf-16-be" if raw[:8] == b"UNICODE\0" else "latin-1", "replace")
        text = text.replace("\0", "")
    else:
        text = str(raw or "")
    if _sd_parameters(text):
        return "Stable Diffusion WebUI", f"EXIF UserComment: {_short(text)}"
    return None


def _software_tags(img: Image.Image) -> list[str]:
    return [t for t in (str(_exif(img).get(0x0131, "")), str(img.info.get("Software", ""))) if t]


def _software(img: Image.Image) -> tuple[str, str] | None:
    for software in _software_tags(img):
        for needle, name in GENERATOR_SOFTWARE.items():
            if needle in software.lower():
                return name, f"Software tag: {_short(software)}"
    return None


def _read_editor(img: Image.Image, sig: _Signals) -> None:
    for software in _software_tags(img):
        if any(e in software.lower() for e in EDITOR_SOFTWARE):
            sig.editor = f"edited with {_short(software, 60)} (Software tag)"


def _read_camera(img: Image.Image, sig: _Signals) -> None:
    exif = _exif(img)
    make, model = str(exif.get(0x010F, "")).strip(), str(exif.get(0x0110, "")).strip()
    if not (make or model):
        return
    sub = exif.get_ifd(0x8769)
    lens = str(sub.get(0xA434, "")).strip()
    taken = str(sub.get(0x9003, "")).strip()
    camera = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    parts = [f"EXIF camera {camera}"] + [f"lens {lens}"] * bool(lens)
    sig.camera = ", ".join(parts + [f"taken {taken}"] * bool(taken))


def _decide(sig: _Signals) -> Evidence:
    """One kind per file: a valid C2PA AI declaration, then a failed manifest (never
    evidence, even beside unsigned claims), then unsigned AI metadata, then the rest."""
    signals = (sig.xmp_ai, sig.generator_detail, sig.xmp_other, sig.camera, sig.editor)
    others = [d for d in signals if d]
    generator = sig.generator or sig.c2pa_generator
    if sig.c2pa == "ai":
        return Evidence("ai-declared", _join([sig.c2pa_detail, *others]), generator)
    if sig.c2pa == "invalid":
        return Evidence("c2pa-invalid", _join([sig.c2pa_detail, *others]), generator)
    if sig.xmp_ai or sig.generator_detail:
        return Evidence("ai-declared", _join([*others, sig.c2pa_detail]), generator)
    if sig.c2pa in ("signed", "unverified"):
        kind = "c2pa-signed" if sig.c2pa == "signed" else "c2pa-unverified"
        return Evidence(kind, _join([sig.c2pa_detail, *others]), generator)
    if sig.camera:
        return Evidence("camera-claimed", _join(others), "")
    return Evidence("none", _join(others), "")


def with_anomalies(evidence: Evidence, notes: tuple[str, ...]) -> Evidence:
    """``evidence`` with metadata anomalies found while decoding (``notes``): the kind
    becomes :data:`ANOMALY` unless a stronger one holds (a declaration, a failed
    manifest), and the detail says what was set aside."""
    if not notes:
        return evidence
    detail = _join([*notes, evidence.detail])
    stronger = (
        KINDS.index(evidence.kind) < KINDS.index(ANOMALY) if evidence.kind in KINDS else False
    )
    return Evidence(evidence.kind if stronger else ANOMALY, detail, evidence.generator)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text[: limit * 4].split())  # a bounded prefix: never the whole text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _join(parts: list[str]) -> str:
    return _short("; ".join(p for p in parts if p), _DETAIL_MAX)
