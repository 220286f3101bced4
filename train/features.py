"""Frozen-encoder features, extracted once per image and view, cached on disk.

With a frozen backbone (CLIP's image tower, :mod:`aiscan.model.clip`), every head and
every protocol fold is fitted on the same features: extracting them is the slow part
(hours on 2 cores for ~25k images), fitting a head takes seconds. So extraction runs
once, in the background, resumable:

- the images are decoded by the scanner's own code (:func:`aiscan.model.pixels.load_pixels`
  with the model's :class:`~aiscan.model.preprocessing.Preprocessing`), so a head fitted
  here sees at serving time the pixels it was fitted on;
- each *view* is a deterministic transform of that decode (:data:`VIEWS`): "base" is what
  the scanner feeds the model, the others are augmentations (flip, JPEG re-encode, blur,
  random crop), seeded by the file's path so that a rerun gives the same features;
- results go to ``OUT/VIEW/part-NNNNN.npz`` shards (written to a temporary name, then
  renamed), each holding its samples' paths; a rerun skips what the shards hold, so a
  killed job resumes where it stopped;
- a file that cannot be decoded is recorded in the shard with its error and no features.

:func:`load_features` reads a view back as arrays in the order of a sample list.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.clip_graph import Encoder
from aiscan.model.errors import UsageError
from aiscan.model.pixels import Box, centre_region, load_pixels, normalize_batch
from aiscan.model.preprocessing import Preprocessing
from aiscan.scanner.core.decode import plugin_for

from .data import Sample

#: The views :func:`extract` knows; "base" is the scanner's input.
VIEWS = ("base", "flip", "jpeg", "blur", "crop")
SHARD = 256


def parse_views(text: str) -> tuple[str, ...]:
    """Views from a comma-separated list (``"base,jpeg"``), each one of :data:`VIEWS`."""
    views = tuple(v for v in text.split(",") if v)
    unknown = sorted(set(views) - set(VIEWS))
    if unknown or not views:
        raise UsageError(f"views: unknown {unknown} in {text!r}; choose from {', '.join(VIEWS)}")
    return views


def _rng(path: str, view: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{view}\0{path}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _crop_region(rng: np.random.Generator) -> Callable[[tuple[int, int], Preprocessing], Box]:
    s, fx, fy = rng.uniform(0.5, 1.0), rng.uniform(), rng.uniform()

    def region(size: tuple[int, int], spec: Preprocessing) -> Box:
        left, top, right, bottom = centre_region(size, spec)
        cw, ch = (right - left) * s, (bottom - top) * s
        x, y = (size[0] - cw) * fx, (size[1] - ch) * fy
        return (x, y, x + cw, y + ch)

    return region


def view_pixels(path: str, spec: Preprocessing, view: str) -> np.ndarray:
    """The uint8 HWC input of one view of one file (see the module docstring)."""
    from PIL import Image, ImageFilter

    if view not in VIEWS:
        raise UsageError(f"view must be one of {VIEWS}, got {view!r}")
    rng = _rng(path, view)
    region = _crop_region(rng) if view == "crop" else None
    plugin_for(path)
    pixels = load_pixels(path, spec, region=region).pixels
    if view in ("base", "crop"):
        return pixels
    if view == "flip":
        return np.ascontiguousarray(pixels[:, ::-1])
    img = Image.fromarray(pixels)
    if view == "blur":
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
    else:  # jpeg
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(50, 96)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(img)


@dataclass(frozen=True)
class Features:
    """One view's features for a sample list (rows in its order).

    Attributes:
        names: the encoder outputs, e.g. ``("image_embeds", "cls_tokens")``.
        arrays: one float32 array per name, first axis the samples.
        ok: False where the file could not be decoded (its rows are zeros).
        errors: the decode error of each sample ("" when ok).
    """

    names: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    ok: np.ndarray
    errors: list[str]


def _done(folder: Path) -> set[str]:
    done: set[str] = set()
    for shard in sorted(folder.glob("part-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            done.update(z["paths"].tolist())
    return done


def _decode_all(
    samples: Sequence[Sample], spec: Preprocessing, view: str, workers: int
) -> Iterator[tuple[Sample, np.ndarray | None, str]]:
    def one(s: Sample) -> tuple[Sample, np.ndarray | None, str]:
        try:
            return s, view_pixels(s.path, spec, view), ""
        except Exception as exc:  # one bad file is a row, never the end of the job
            return s, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(one, samples)


def extract(
    samples: Sequence[Sample],
    encoder: Encoder,
    spec: Preprocessing,
    out: str | Path,
    view: str = "base",
    batch_size: int = 32,
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> Path:
    """Features of every sample for one view, into ``out/view`` (resumable; see above)."""
    folder = Path(out) / view
    folder.mkdir(parents=True, exist_ok=True)
    done = _done(folder)
    todo = [s for s in samples if s.path not in done]
    cached = len(samples) - len(todo)  # of these samples (the cache may hold others too)
    log(f"{view}: {cached} cached, {len(todo)} to extract")
    start, count = time.perf_counter(), 0
    part = len(list(folder.glob("part-*.npz")))
    for first in range(0, len(todo), SHARD):
        chunk = todo[first : first + SHARD]
        rows = list(_decode_all(chunk, spec, view, workers))
        good = [(s, px) for s, px, _ in rows if px is not None]
        feats: dict[str, list[np.ndarray]] = {n: [] for n in encoder.names}
        for b in range(0, len(good), batch_size):
            batch = normalize_batch([px for _, px in good[b : b + batch_size]], spec)
            for name, arr in encoder(batch).items():
                feats[name].append(arr.astype(np.float16))
        arrays = {
            n: np.concatenate(v) if v else np.zeros((0,), np.float16) for n, v in feats.items()
        }
        tmp = folder / f".part-{part:05d}.tmp.npz"
        failed = [(s.path, e) for s, px, e in rows if px is None]
        arrays["paths"] = np.array([s.path for s, _ in good] + [p for p, _ in failed], dtype=str)
        arrays["n_ok"] = np.array(len(good))
        arrays["errors"] = np.array([e for _, e in failed], dtype=str)
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, folder / f"part-{part:05d}.npz")
        part += 1
        count += len(chunk)
        rate = count / (time.perf_counter() - start)
        log(f"{view}: {cached + count}/{len(samples)} ({rate:.1f} images/s)")
    return folder


#: The file in a features cache that names the encoder graph its features came from.
PRECISION_FILE = "precision.txt"
#: The file that names the version of the encoder graph's rewrite
#: (:data:`aiscan.model.clip_graph.GRAPH_VERSION`): features of two versions are never
#: mixed in one cache (version 3 quantises each image on its own).
GRAPH_FILE = "graph.txt"


def features_precision(cache: str | Path) -> str:
    """The encoder graph ("int8", "fp32", "fp16") a features cache was extracted with:
    its :data:`PRECISION_FILE`, or the one ``features_<precision>.json`` report in it.

    Raises:
        ValueError: the cache names none, or more than one.
    """
    folder = Path(cache)
    marker = folder / PRECISION_FILE
    if marker.is_file():
        return marker.read_text().strip()
    found = sorted(p.stem.removeprefix("features_") for p in folder.glob("features_*.json"))
    if len(found) != 1:
        raise UsageError(
            f"{folder}: cannot tell which encoder graph its features came from "
            f"(reports: {found or 'none'})"
        )
    return found[0]


def claim_precision(cache: str | Path, precision: str) -> None:
    """Mark ``cache`` as holding ``precision`` features; refuse one that holds another's
    (features of two graphs in one cache would be mixed into one head).

    Raises:
        ValueError: the cache holds features of another precision.
    """
    folder = Path(cache)
    try:
        held = features_precision(folder)
    except ValueError:
        held = None
    if held is not None and held != precision:
        raise UsageError(
            f"{folder} holds {held} features; extract {precision} ones into another folder"
        )
    from aiscan.model.clip_graph import GRAPH_VERSION

    graph = folder / GRAPH_FILE
    held_graph = graph.read_text().strip() if graph.is_file() else None
    extracted = any(folder.glob("*/part-*.npz"))
    if extracted and held_graph != str(GRAPH_VERSION):
        raise UsageError(
            f"{folder} holds features of encoder graph version {held_graph or '2 or older'}, "
            f"this aiscan builds version {GRAPH_VERSION}; extract into another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PRECISION_FILE).write_text(precision + "\n")
    graph.write_text(f"{GRAPH_VERSION}\n")


def features_graph(cache: str | Path) -> int | None:
    """The encoder graph version (:data:`aiscan.model.clip_graph.GRAPH_VERSION`) a features
    cache was extracted with, or None for a cache from before it was recorded (version 2
    or older: the int8 graphs then quantised a batch of 32 images together)."""
    marker = Path(cache) / GRAPH_FILE
    return int(marker.read_text().strip()) if marker.is_file() else None


#: The file in a features cache that holds the preprocessing its features came from.
PREPROCESSING_FILE = "preprocessing.json"


def features_preprocessing(cache: str | Path) -> Preprocessing:
    """The preprocessing a features cache was extracted with: its
    :data:`PREPROCESSING_FILE`, or CLIP's native one for caches from before that file."""
    from aiscan.model.clip import PREPROCESSING

    marker = Path(cache) / PREPROCESSING_FILE
    if marker.is_file():
        return Preprocessing.from_json(marker.read_text())
    return PREPROCESSING


def claim_preprocessing(cache: str | Path, spec: Preprocessing) -> None:
    """Mark ``cache`` as holding features of ``spec``'s pixels; refuse one that holds
    another's (features of two pixel regimes in one cache would be mixed into one head).

    Raises:
        UsageError: the cache holds features of another preprocessing.
    """
    folder = Path(cache)
    marker = folder / PREPROCESSING_FILE
    has_features = any(folder.glob("*/part-*.npz"))
    if marker.is_file() or has_features:
        held = features_preprocessing(folder)
        if held != spec:
            raise UsageError(
                f"{folder} holds features of another preprocessing ({held.to_json()}); "
                "extract these into another folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(spec.to_json() + "\n")


def load_features(folder: str | Path, samples: Sequence[Sample]) -> Features:
    """One view's cached features in the order of ``samples``.

    Raises:
        ValueError: a sample has no features in the cache (extraction unfinished).
    """
    where: dict[str, tuple[int, int]] = {}
    shards: list[dict[str, Any]] = []
    for shard in sorted(Path(folder).glob("part-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        n_ok = int(data["n_ok"])
        for i, p in enumerate(data["paths"].tolist()):
            where[p] = (len(shards), i if i < n_ok else -1 - (i - n_ok))
        shards.append(data)
    missing = [s.path for s in samples if s.path not in where]
    if missing:
        raise UsageError(
            f"{len(missing)} of {len(samples)} samples have no features in {folder} "
            f"(first: {missing[0]}); run the extraction to the end"
        )
    names = tuple(k for k in shards[0] if k not in ("paths", "n_ok", "errors"))
    arrays, ok, errors = {}, np.zeros(len(samples), bool), [""] * len(samples)
    for name in names:
        shape = next(s[name].shape[1:] for s in shards if s[name].ndim > 1)
        arrays[name] = np.zeros((len(samples), *shape), np.float32)
    for row, s in enumerate(samples):
        k, i = where[s.path]
        if i < 0:
            errors[row] = str(shards[k]["errors"][-1 - i])
            continue
        ok[row] = True
        for name in names:
            arrays[name][row] = shards[k][name][i]
    return Features(names, arrays, ok, errors)
