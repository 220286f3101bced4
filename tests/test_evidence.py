"""Provenance evidence: real files built here, C2PA ones signed with a throwaway
certificate chain made in the test (no network)."""

from __future__ import annotations

import datetime
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin, features

from aiscan.scanner.core.evidence import Evidence, read_evidence
from tests.conftest import encode, jpeg_bytes, photo

AI_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CAMERA_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def _evidence(data: bytes, fmt: str) -> Evidence:
    return read_evidence(io.BytesIO(data), fmt)


@pytest.fixture(scope="module")
def signer() -> Any:
    """An ES256 signer: a throwaway root CA and a leaf made for this test run."""
    c2pa = pytest.importorskip("c2pa")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aiscan tests"),
            ]
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    usage = {k: False for k in x509.KeyUsage.__init__.__code__.co_varnames[1:10]}

    def cert(subject: str, issuer: Any, key: Any, sign_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    **{**usage, "key_cert_sign": ca, "crl_sign": ca, "digital_signature": not ca}
                ),
                critical=True,
            )
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        if not ca:  # what C2PA asks of a signing certificate
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(sign_key.public_key()),
                critical=False,
            )
        return builder.sign(sign_key, hashes.SHA256())

    root_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = cert("aiscan test root", name("aiscan test root"), root_key, root_key, True)
    leaf = cert("aiscan test signer", root.subject, leaf_key, root_key, False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    key = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, key, None))


def _signed(signer: Any, data: bytes, mime: str, source_type: str) -> bytes:
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": "Imaginary Diffusion", "version": "2.0"}],
        "title": "test",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": source_type,
                            "softwareAgent": {"name": "Imaginary Diffusion"},
                        }
                    ]
                },
            }
        ],
    }
    out = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_c2pa_declaring_generative_ai(signer: Any, fmt: str, mime: str) -> None:
    data = _signed(signer, encode(photo(96, 64), fmt), mime, AI_TYPE)
    ev = _evidence(data, fmt)
    assert ev.kind == "ai-declared"
    assert "C2PA manifest, valid, signed by 'aiscan test signer'" in ev.detail
    assert "not on a trust list" in ev.detail  # a throwaway root is nobody's trust anchor
    assert "trainedAlgorithmicMedia" in ev.detail
    assert ev.generator == "Imaginary Diffusion 2.0"


def test_a_tampered_c2pa_file_is_invalid_not_evidence(signer: Any) -> None:
    data = bytearray(_signed(signer, jpeg_bytes(photo(96, 64)), "image/jpeg", AI_TYPE))
    data[-200] ^= 0xFF  # one flipped bit in the image data
    ev = _evidence(bytes(data), "JPEG")
    assert ev.kind == "c2pa-invalid"
    assert "fails validation" in ev.detail and "dataHash.mismatch" in ev.detail


def test_c2pa_of_a_camera_capture_is_signed_not_ai(signer: Any) -> None:
    ev = _evidence(_signed(signer, jpeg_bytes(photo(96, 64)), "image/jpeg", CAMERA_TYPE), "JPEG")
    assert ev.kind == "c2pa-signed" and "trainedAlgorithmicMedia" not in ev.detail


def test_without_c2pa_python_a_manifest_is_unverified(
    signer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _signed(signer, jpeg_bytes(photo(96, 64)), "image/jpeg", AI_TYPE)
    monkeypatch.setitem(sys.modules, "c2pa", None)
    ev = _evidence(data, "JPEG")
    assert ev.kind == "c2pa-unverified" and "aiscan-batch[evidence]" in ev.detail


def _png(**text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return encode(photo(64, 64), "PNG", pnginfo=info)


SD_PARAMETERS = (
    "a castle on a hill\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
    "Seed: 1234, Size: 512x512, Model hash: abc123, Model: sd_xl_base_1.0"
)


def test_stable_diffusion_webui_parameters_chunk() -> None:
    ev = _evidence(_png(parameters=SD_PARAMETERS), "PNG")
    assert ev.kind == "ai-declared"
    assert ev.generator == "Stable Diffusion WebUI (model sd_xl_base_1.0)"
    assert ev.detail.startswith("PNG text chunk 'parameters': a castle on a hill")


def test_comfyui_prompt_chunk() -> None:
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": 5}}, "4": {"class_type": "X"}}
    ev = _evidence(_png(prompt=json.dumps(graph)), "PNG")
    assert (ev.kind, ev.generator) == ("ai-declared", "ComfyUI")
    plain = _evidence(_png(prompt="a prompt a person wrote as a caption"), "PNG")
    assert plain.kind == "none"  # a 'prompt' key alone is not a ComfyUI graph


def test_parameters_in_jpeg_exif_user_comment() -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + SD_PARAMETERS.encode("utf-16-be")
    ev = _evidence(jpeg_bytes(photo(64, 64), exif=exif.tobytes()), "JPEG")
    assert ev.kind == "ai-declared" and "EXIF UserComment" in ev.detail


def _xmp(source_type: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'Iptc4xmpExt:DigitalSourceType="{source_type}"/></rdf:RDF></x:xmpmeta>'
    ).encode()


def test_iptc_digital_source_type_in_xmp() -> None:
    ai = _evidence(jpeg_bytes(photo(64, 64), xmp=_xmp(AI_TYPE)), "JPEG")
    assert ai.kind == "ai-declared"
    assert ai.detail == "XMP Iptc4xmpExt:DigitalSourceType = trainedAlgorithmicMedia"
    capture = _evidence(jpeg_bytes(photo(64, 64), xmp=_xmp(CAMERA_TYPE)), "JPEG")
    assert capture.kind == "none" and "digitalCapture" in capture.detail


def test_camera_exif_is_reported_as_a_claim_only() -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    exif.get_ifd(0x8769)[0x9003] = "2021:06:01 12:00:00"
    ev = _evidence(jpeg_bytes(photo(64, 64), exif=exif.tobytes()), "JPEG")
    assert ev == Evidence("camera-claimed", "EXIF camera Canon EOS R5, taken 2021:06:01 12:00:00")


def test_editor_software_is_context_only() -> None:
    exif = Image.Exif()
    exif[0x0131] = "Adobe Photoshop 25.0 (Windows)"
    ev = _evidence(jpeg_bytes(photo(64, 64), exif=exif.tobytes()), "JPEG")
    assert ev.kind == "none" and "edited with Adobe Photoshop 25.0" in ev.detail


def test_c2pa_in_webp(signer: Any) -> None:
    data = _signed(signer, encode(photo(96, 64), "WEBP"), "image/webp", AI_TYPE)
    assert _evidence(data, "WEBP").kind == "ai-declared"


def _bmff(fmt: str) -> bytes:
    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif")
        pillow_heif.register_heif_opener()
    elif not features.check("avif"):
        pytest.skip("this Pillow has no AVIF encoder")
    return encode(photo(96, 64), fmt)


@pytest.mark.parametrize(("fmt", "mime"), [("HEIF", "image/heic"), ("AVIF", "image/avif")])
def test_c2pa_in_heif_and_avif(signer: Any, fmt: str, mime: str) -> None:
    data = _bmff(fmt)
    assert _evidence(data, fmt).kind == "none"
    signed = _signed(signer, data, mime, AI_TYPE)
    ev = _evidence(signed, fmt)
    assert ev.kind == "ai-declared" and ev.detail.startswith("C2PA manifest, valid")
    tampered = bytearray(signed)
    tampered[-40] ^= 0xFF  # in the image data (mdat), which the manifest hashes
    assert _evidence(bytes(tampered), fmt).kind == "c2pa-invalid"


def test_a_bmff_file_with_broken_boxes_is_not_a_crash() -> None:
    head = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    for tail in (b"", b"\x00\x00\x00\x04junk", b"\x00\x00\x00\x01uuid\x00\x00", b"\xff" * 7):
        assert _evidence(head + tail, "HEIF").kind == "none"


def test_generator_software_tag() -> None:
    exif = Image.Exif()
    exif[0x0131] = "NovelAI"
    ev = _evidence(jpeg_bytes(photo(64, 64), exif=exif.tobytes()), "JPEG")
    assert (ev.kind, ev.generator) == ("ai-declared", "NovelAI")


def test_plain_files_have_no_evidence() -> None:
    for data, fmt in [(jpeg_bytes(photo(64, 64)), "JPEG"), (encode(photo(64, 64), "PNG"), "PNG")]:
        assert _evidence(data, fmt) == Evidence()


def test_scan_writes_evidence_and_the_override_policy_sets_the_verdict(
    tiny_model: Path, tmp_path: Path
) -> None:
    from aiscan.scanner.cli import main
    from aiscan.scanner.output.formats import read_rows

    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "sd.png").write_bytes(_png(parameters=SD_PARAMETERS))
    (tree / "plain.jpg").write_bytes(jpeg_bytes(photo(64, 64)))
    for policy in ("report", "override"):
        out = tmp_path / f"{policy}.csv"
        args = [str(tree), "--out", str(out), "--model", str(tiny_model), "-q"]
        assert main([*args, "--threshold", "1.0", "--evidence-policy", policy]) == 0
        rows = {Path(r.path).name: r for r in read_rows(out)}
        sd, plain = rows["sd.png"], rows["plain.jpg"]
        assert sd.evidence == "ai-declared" and sd.generator_hint.startswith("Stable Diffusion")
        assert plain.evidence == "none" and plain.verdict == "real"
        assert sd.verdict == ("ai" if policy == "override" else "real")
        assert sd.p_ai is not None and sd.p_ai < 1.0  # the model's score is untouched


def test_a_jumbf_segment_without_a_manifest_is_not_c2pa() -> None:
    pytest.importorskip("c2pa")
    import struct

    data = jpeg_bytes(photo(32, 32))
    seg = b"JP" + b"\x00\x10not a manifest store"
    bogus = data[:2] + b"\xff\xeb" + struct.pack(">H", len(seg) + 2) + seg + data[2:]
    assert _evidence(bogus, "JPEG") == Evidence()


def _ratio(parse, small: object, large: object) -> float:  # type: ignore[no-untyped-def]
    """Time of ``parse(large)`` over ``parse(small)``, each the best of five runs."""
    import time

    def best(arg: object) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            parse(arg)
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(large) / max(best(small), 1e-6)


@pytest.mark.parametrize(
    ("name", "parse", "unit"),
    [
        ("XMP DigitalSourceType repeated, no value", "_source_types", b"DigitalSourceType "),
        ("XMP DigitalSourceType= repeated", "_source_types", b"DigitalSourceType=x "),
        ("SD parameters: Steps repeated, no Sampler", "_sd_parameters", "Steps: 1 "),
        ("SD parameters: Model repeated", "_model_name", "Model: x"),
    ],
)
def test_evidence_parsers_take_linear_time_on_adversarial_text(
    name: str, parse: str, unit: str | bytes
) -> None:
    """Sixteen times the input costs about sixteen times the time (a quadratic parser:
    256): the bound 64 sits between, a factor of 4 from each, so a busy machine does not
    fail a linear parser (at 8x and a bound of 24, one did). The inputs repeat what made
    the old regular expressions backtrack (issue 19: a 2-3 KB PNG stalled a scan for
    minutes). A busy machine can still slow one measurement past the bound, so the
    ratio is measured up to three times: a linear parser passes one of them, a quadratic
    one (256) none."""
    from aiscan.scanner.core import evidence

    fn = getattr(evidence, parse)
    small, large = unit * 2000, unit * 32000
    ratios = []
    for _ in range(3):
        ratios.append(_ratio(fn, small, large))
        if ratios[-1] < 64:
            break
    assert min(ratios) < 64, (name, ratios)


def test_a_png_of_hostile_metadata_gives_short_evidence_quickly(tmp_path: Path) -> None:
    """The evidence reader on a PNG whose text chunks repeat the backtracking patterns and
    carry a 200,000-character model name: one short row, no stall."""
    from PIL import PngImagePlugin

    from aiscan.scanner.core.evidence import read_evidence
    from aiscan.scanner.output.records import TEXT_CELL_MAX, record_of

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 1 " * 30000 + "Sampler: x, Model: " + "m" * 200_000)
    info.add_itxt("XML:com.adobe.xmp", "<x " + "DigitalSourceType " * 30000 + ">")
    path = tmp_path / "hostile.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with path.open("rb") as fh:
        found = read_evidence(fh, "PNG")
    assert found.generator.startswith("Stable Diffusion WebUI (model m")
    assert len(found.generator) < 200 and len(found.detail) < 2000
    from aiscan.scanner.core.rows import Row

    row = Row(
        path=str(path),
        status="error",
        p_ai=None,
        verdict="",
        error="x" * 300_000,
        format="PNG",
        width=8,
        height=8,
        bytes=1,
        sha256="",
        model="m",
    )
    assert len(record_of(row)["error"]) == TEXT_CELL_MAX
    assert record_of(row)["error"].endswith("[cut: 300000 characters]")
