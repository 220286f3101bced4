"""Datasets of class folders, stratified splits saved as files, the training Dataset."""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.meta import LABELS, POSITIVE_LABEL
from aiscan.model.pixels import RegionFn, load_pixels, normalize_batch
from aiscan.model.preprocessing import Preprocessing
from aiscan.scanner.core.decode import plugin_for
from aiscan.scanner.core.discovery import discover
from aiscan.scanner.core.sniffing import claims_image

#: The report's split: 72.25% train, 12.75% validation, 15% test.
SPLIT_FRACTIONS = {"train": 0.7225, "val": 0.1275, "test": 0.15}


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``label`` indexes :data:`LABELS`; ``group`` is the folder
    below the source folder ("" when the file lies in the source folder itself): a
    generator, or a kind of picture (train-v4's anime, portrait...)."""

    path: str
    label: int
    source: str
    group: str = ""

    @property
    def is_ai(self) -> bool:
        return LABELS[self.label] == POSITIVE_LABEL


def find_samples(data_dirs: str | Path | Sequence[str | Path]) -> list[Sample]:
    """Every image under ``DIR/ai`` and ``DIR/real`` (any depth) of each data folder.

    The source of a sample is the ``source`` column of ``DIR/manifest.csv`` when there is
    one, else the first folder below its class folder ("-" when none). Sources are
    named by those names alone, so one source spread over two folders stays one source.
    The group is the ``group`` column of the manifest, else the second folder below the
    class folder ("" when none).
    """
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    if not dirs:
        raise UsageError("no data folder given")
    return [s for d in dirs for s in _find_in(Path(d))]


def _find_in(given: Path) -> list[Sample]:
    # the walk gives absolute paths (os.path.abspath: "..", ".", a trailing slash resolved,
    # links kept as named): the root is made absolute the same way, to take them apart
    root = Path(os.path.abspath(given))
    missing = [name for name in LABELS if not (root / name).is_dir()]
    if missing:
        raise UsageError(f"{root} needs class folders {', '.join(LABELS)}; missing {missing}")
    manifest = _manifest_sources(root)
    samples = []
    for label, name in enumerate(LABELS):
        for found in discover([str(root / name)]):
            if found.error or found.skip_reason or not claims_image(found.path):
                continue
            rel = Path(found.path).relative_to(root)
            source, group = manifest.get(rel.as_posix(), ("", ""))
            source = source or (rel.parts[1] if len(rel.parts) > 2 else "-")
            group = group or (rel.parts[2] if len(rel.parts) > 3 else "")
            samples.append(Sample(found.path, label, source, group))
    if not samples:
        raise UsageError(f"no images found under {root}/{{{','.join(LABELS)}}}")
    return samples


def _manifest_sources(root: Path) -> dict[str, tuple[str, str]]:
    """(source, group) of each file the manifest names with a source."""
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {
            row["path"]: (row["source"], _group(row.get("group")))
            for row in csv.DictReader(fh)
            if row.get("source")
        }


def _group(value: str | None) -> str:
    return "" if value in (None, "-") else str(value)


def stratified_split(
    samples: Sequence[Sample], seed: int = 0, fractions: dict[str, float] | None = None
) -> dict[str, list[Sample]]:
    """Split every (label, source) group by ``fractions``, shuffled with ``seed``.

    Each group is cut separately, so every split holds each source in proportion; the
    result depends only on the samples (sorted by path first) and the seed.
    """
    fractions = fractions or SPLIT_FRACTIONS
    groups: dict[tuple[int, str], list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.path):
        groups[(s.label, s.source)].append(s)
    rng = random.Random(seed)
    out: dict[str, list[Sample]] = {name: [] for name in fractions}
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        counts = _apportion(len(group), list(fractions.values()))
        start = 0
        for name, n in zip(fractions, counts, strict=True):
            out[name] += group[start : start + n]
            start += n
    return out


def source_groups(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Indices of the samples of each "label/source", by name (each holds one class)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[f"{LABELS[s.label]}/{s.source}"].append(i)
    return {name: np.array(idx) for name, idx in sorted(groups.items())}


def source_folds(samples: Sequence[Sample], k: int) -> dict[str, int]:
    """Assign every source name to one of ``k`` folds, so that folds hold similar shares of
    both classes: the held-out part of a grouped cross-validation.

    A source never straddles two folds (both classes of a source with both go together).
    Sources are placed largest first, each in the fold whose fuller class share it grows
    least; the result depends only on the sources' names and sizes.
    """
    if k < 2:
        raise UsageError(f"grouped folds need k >= 2, got {k}")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        counts[s.source][s.label] += 1
    if len(counts) < k:
        raise UsageError(f"{len(counts)} sources cannot make {k} folds")
    totals = [max(1, sum(c[i] for c in counts.values())) for i in range(len(LABELS))]
    load = [[0.0] * len(LABELS) for _ in range(k)]
    folds: dict[str, int] = {}
    for name in sorted(counts, key=lambda n: (-sum(counts[n]), n)):
        share = [c / t for c, t in zip(counts[name], totals, strict=True)]
        best = min(
            range(k),
            key=lambda f: (max(a + b for a, b in zip(load[f], share, strict=True)), f),
        )
        load[best] = [a + b for a, b in zip(load[best], share, strict=True)]
        folds[name] = best
    return folds


def parse_fold(text: str) -> tuple[int, int]:
    """``"I/K"`` (1-based) -> (index, k); raises ValueError with the expected form."""
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"a fold is I/K, e.g. 2/4; got {text!r}") from None
    if not (k >= 2 and 1 <= i <= k):
        raise UsageError(f"fold {text!r}: need K >= 2 and 1 <= I <= K")
    return i, k


def holdout_split(
    samples: Sequence[Sample], fold: str, seed: int = 0, val_fraction: float = 0.15
) -> dict[str, list[Sample]]:
    """Grouped cross-validation split: the sources of fold I of K are the "test" split
    (never trained on, never used to choose anything), the others are split stratified
    into "train" and "val" (validation in-source: early stopping, threshold)."""
    i, k = parse_fold(fold)
    folds = source_folds(samples, k)
    held = [s for s in samples if folds[s.source] == i - 1]
    rest = [s for s in samples if folds[s.source] != i - 1]
    split = stratified_split(rest, seed, {"train": 1 - val_fraction, "val": val_fraction})
    split["test"] = sorted(held, key=lambda s: s.path)
    return split


def _apportion(n: int, fractions: list[float]) -> list[int]:
    """Largest-remainder rounding of ``n * fractions`` to integers that sum to ``n``."""
    raw = [n * f / sum(fractions) for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True):
        if sum(counts) == n:
            break
        counts[i] += 1
    return counts


def save_split(split: dict[str, list[Sample]], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "source", "split"])
        for name, samples in split.items():
            writer.writerows([s.path, LABELS[s.label], s.source, name] for s in samples)


def load_split(path: str | Path) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = defaultdict(list)
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out[row["split"]].append(Sample(row["path"], LABELS.index(row["label"]), row["source"]))
    return dict(out)


if TYPE_CHECKING:  # typed as torch's Dataset; at run time no torch import is needed
    from torch.utils.data import Dataset

    _DatasetBase = Dataset[tuple[np.ndarray, int]]
else:
    _DatasetBase = object


class ImageDataset(_DatasetBase):
    """Training/evaluation images: the scanner's decode, then optional augmentation.

    A map-style dataset for ``torch.utils.data.DataLoader`` (``__len__`` and
    ``__getitem__``); it does not subclass torch's ``Dataset``, so that this module, and
    evaluation with it, import without torch.

    Decoding, orientation, colour conversion and resize are
    :func:`aiscan.model.pixels.load_pixels` (the scanner's own code; ``region``
    picks random regions of the model's resize policy in training); augmentations
    run on the resized uint8 image; :func:`collate` normalises with the scanner's
    :func:`~aiscan.model.pixels.normalize_batch`.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: Preprocessing,
        augment: Any = None,
        region: RegionFn | None = None,
    ) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.augment = augment
        self.region = region

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        sample = self.samples[index]
        plugin_for(sample.path)  # HEIC opens here as it does in the scan
        pixels = load_pixels(sample.path, self.spec, region=self.region).pixels
        if self.augment is not None:
            import torch

            chw = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)  # writable copy
            pixels = self.augment(chw).permute(1, 2, 0).contiguous().numpy()
        return pixels, sample.label


def make_collate(spec: Preprocessing) -> Any:
    """A DataLoader collate that normalises exactly as the scanner does."""

    def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[Any, Any]:
        import torch

        images = normalize_batch([b[0] for b in batch], spec)
        return torch.from_numpy(images), torch.tensor([b[1] for b in batch])

    return collate
