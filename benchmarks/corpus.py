"""Generated image corpora that decode like real ones.

Flat colour compresses to nothing and decodes far faster than a photo, which would
flatter every decoder. These images are mosaics of real photographs (from
``../shared/data`` when present) or of procedural texture, upscaled, with sensor-like
noise, saved as JPEG quality 90 with 4:2:0 chroma: file sizes land near a camera's.
"""

from __future__ import annotations

import glob
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: name -> (width, height) of the generated images
SIZES = {"1024px": (1024, 768), "12mp": (4000, 3000)}
_PHOTO_SETS = ("bsds500", "imagenet-1k-ajs", "dpst-photos", "hymenoptera")


def texture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Procedural photo-like content: gradients, hard edges, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(x / (17 + 5 * c) + y / (23 + 3 * c) + seed) for c in range(3)],
        axis=-1,
    )
    base[(x // 37 + y // 29) % 7 == 0] *= 0.4
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def photo_sources(data_dir: Path | None) -> list[str]:
    """Real photographs to build mosaics from; empty when the shared data is absent."""
    if data_dir is None or not data_dir.is_dir():
        return []
    files: list[str] = []
    for name in _PHOTO_SETS:
        files += sorted(glob.glob(str(data_dir / "train-v1" / "real" / name / "*.jpg")))
    return files


def mosaic(
    width: int, height: int, sources: list[str], seed: int, noise: float = 5.0
) -> Image.Image:
    """A ``width`` x ``height`` image of 3x3 upscaled photos plus per-pixel noise."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (width, height))
    tw, th = -(-width // 3), -(-height // 3)
    for k in range(9):
        if sources:
            with Image.open(sources[int(rng.integers(len(sources)))]) as src:
                tile = src.convert("RGB").resize((tw, th), Image.Resampling.BICUBIC)
        else:
            tile = texture(tw, th, seed=seed * 9 + k)
        canvas.paste(tile, ((k % 3) * tw, (k // 3) * th))
    arr = np.asarray(canvas, dtype=np.float32)
    arr += rng.normal(0.0, noise, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Corpus:
    """A folder of generated JPEGs and what they are."""

    name: str
    path: Path
    files: list[Path]
    width: int
    height: int
    mean_bytes: int
    progressive: bool
    mpo: bool = False
    png: bool = False


def make_corpus(
    root: Path,
    name: str,
    count: int,
    *,
    data_dir: Path | None = None,
    progressive: bool = False,
    mpo: bool = False,
    png: bool = False,
    distinct: int = 8,
) -> Corpus:
    """Create (or reuse) ``count`` JPEGs of size ``SIZES[name]`` under ``root``.

    Only ``distinct`` different images are encoded (12 MP encodes are slow); the rest
    are byte copies, which decode just as slowly. ``mpo`` writes multi-picture JPEGs as
    many cameras and phones do: the picture, then a second, half-size one; ``png``
    writes PNGs (default compression) instead of JPEGs.
    """
    width, height = SIZES[name]
    variant = "-progressive" if progressive else "-mpo" if mpo else "-png" if png else ""
    folder = root / f"{name}{variant}-{count}"
    ext = "png" if png else "jpg"
    files = [folder / f"{i // 100:03d}" / f"{i:06d}.{ext}" for i in range(count)]
    if not all(f.exists() for f in files):
        sources = photo_sources(data_dir)
        blobs = []
        for seed in range(min(distinct, count)):
            buf = io.BytesIO()
            img = mosaic(width, height, sources, seed)
            if png:
                img.save(buf, "PNG")
            elif mpo:
                second = img.resize((width // 2, height // 2))
                img.save(buf, "MPO", save_all=True, append_images=[second], quality=90)
            else:
                img.save(buf, "JPEG", quality=90, subsampling="4:2:0", progressive=progressive)
            blobs.append(buf.getvalue())
        for i, f in enumerate(files):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(blobs[i % len(blobs)])
    sizes = [f.stat().st_size for f in files]
    return Corpus(name, folder, files, width, height, int(np.mean(sizes)), progressive, mpo, png)
