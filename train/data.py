"""Datasets of class folders, stratified splits saved as files, the training Dataset."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from aiscan.scanner.discover import discover
from aiscan.scanner.modelmeta import POSITIVE_LABEL
from aiscan.scanner.preprocess import Preprocessing, load_pixels, normalize_batch
from aiscan.scanner.sniff import claims_image

#: Output order of every model this module trains. AI is index 0, as in the report, and
#: the positive class of every metric (see aiscan.scanner.modelmeta.POSITIVE_LABEL).
LABELS = ("ai", "real")
#: The report's split: 72.25% train, 12.75% validation, 15% test.
SPLIT_FRACTIONS = {"train": 0.7225, "val": 0.1275, "test": 0.15}


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``label`` indexes :data:`LABELS`."""

    path: str
    label: int
    source: str

    @property
    def is_ai(self) -> bool:
        return LABELS[self.label] == POSITIVE_LABEL


def find_samples(data_dir: str | Path) -> list[Sample]:
    """Every image under ``data_dir/ai`` and ``data_dir/real`` (any depth).

    The source of a sample is the ``source`` column of ``data_dir/manifest.csv`` when
    there is one, else the first folder below its class folder ("-" when none).
    """
    root = Path(data_dir)
    missing = [name for name in LABELS if not (root / name).is_dir()]
    if missing:
        raise ValueError(f"{root} needs class folders {', '.join(LABELS)}; missing {missing}")
    manifest = _manifest_sources(root)
    samples = []
    for label, name in enumerate(LABELS):
        for found in discover([str(root / name)]):
            if found.error or found.skipped or not claims_image(found.path):
                continue
            rel = Path(found.path).relative_to(root)
            source = manifest.get(rel.as_posix()) or (rel.parts[1] if len(rel.parts) > 2 else "-")
            samples.append(Sample(found.path, label, source))
    if not samples:
        raise ValueError(f"no images found under {root}/{{{','.join(LABELS)}}}")
    return samples


def _manifest_sources(root: Path) -> dict[str, str]:
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["path"]: row["source"] for row in csv.DictReader(fh) if row.get("source")}


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


class ImageDataset(Dataset[tuple[np.ndarray, int]]):
    """Training/evaluation images: the scanner's decode, then optional augmentation.

    Decoding, orientation, colour conversion and resize are
    :func:`aiscan.scanner.preprocess.load_pixels` (the scanner's own code); augmentations
    run on the resized uint8 image; :func:`collate` normalises with the scanner's
    :func:`~aiscan.scanner.preprocess.normalize_batch`.
    """

    def __init__(self, samples: Sequence[Sample], spec: Preprocessing, augment: Any = None) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        sample = self.samples[index]
        pixels = load_pixels(sample.path, self.spec).pixels
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
