"""``aiscan merge``: join the outputs of ``--shard I/N`` runs and prove they add up.

Every part's run summary says which shard it scanned; the merge checks that the parts are
shards 0..N-1 of one N, each once, that no file has a row in two parts, and, given the
tree, that every file discovered there has a row (the same discovery the scans used).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiscan.model.errors import AiscanError
from aiscan.model.meta import band_label

from ..core.discovery import discover
from ..core.rows import Judge, Row, judge_difference
from ..output.formats import chunked, iter_rows
from ..output.sidecars import sidecars
from ..output.writer import VerdictWriter


class MergeError(AiscanError, ValueError):
    """The parts cannot be merged as given; the message says why."""


@dataclass
class MergeReport:
    """What the merge found. ``complete`` when nothing is missing or doubled."""

    parts: int = 0
    rows: int = 0
    shards: str = ""
    missing_shards: list[int] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing_shards or self.doubled or self.missing or self.unexpected)


def _shard_of(part: Path) -> tuple[int, int]:
    summary = sidecars(part).summary
    try:
        shard = json.loads(summary.read_text(encoding="utf-8"))["config"]["shard"]
        i, n = (int(v) for v in str(shard).split("/"))
    except (OSError, ValueError, KeyError) as exc:
        raise MergeError(f"{part}: no readable run summary beside it ({summary}): {exc}") from exc
    return i, n


def merge(
    parts: Sequence[Path],
    out: Path,
    *,
    fmt: str = "csv",
    tree: Sequence[str] = (),
    overwrite: bool = False,
    mix_models: bool = False,
) -> MergeReport:
    """Write every part's rows to ``out`` (first row of a path wins) and report.

    Raises:
        MergeError: the parts are not shards of one run, or their rows were judged by
            different models, edges or evidence policies (unless ``mix_models``).
    """
    if not parts:
        raise MergeError("give the outputs of the shard runs to merge")
    shards = [_shard_of(p) for p in parts]
    if not mix_models:
        _one_judge(parts)
    counts = {n for _, n in shards}
    if len(counts) != 1:
        raise MergeError(f"the parts come from different shard counts: {sorted(counts)}")
    (n,) = counts
    report = MergeReport(parts=len(parts), shards=f"{len(set(shards))} of {n}")
    seen_shards = [i for i, _ in shards]
    report.missing_shards = sorted(set(range(n)) - set(seen_shards))
    if len(seen_shards) != len(set(seen_shards)):
        dup = sorted({i for i in seen_shards if seen_shards.count(i) > 1})
        raise MergeError(f"shard(s) {dup} given twice")
    seen: set[str] = set()
    writer = VerdictWriter(out, fmt, overwrite=overwrite)
    try:
        for chunk in chunked(_rows(parts, seen, report)):
            writer.write(chunk)
        writer.finish()
    finally:
        writer.close()
    if tree:
        expected = {f.path for f in discover(tree)}
        report.missing = sorted(expected - seen)
        report.unexpected = sorted(seen - expected)
    return report


def _one_judge(parts: Sequence[Path]) -> None:
    """Refuse parts whose rows were judged otherwise (model, edges, evidence policy): one
    line naming the first two judges and what differs between them. Rows from before
    rows recorded their band take their part's summary's."""
    first: tuple[Judge, Path] | None = None
    for part in parts:
        legacy = _summary_band(part)
        for row in iter_rows(part):
            if row.status != "ok":
                continue
            judge = (row.model, row.band or legacy)
            if first is None:
                first = (judge, part)
            elif judge != first[0]:
                raise MergeError(
                    f"{first[1]} and {part} hold rows judged otherwise "
                    f"({judge_difference(first[0], judge)}): merge outputs of one model and "
                    "band, or pass --mix-models to keep both"
                )


def _summary_band(part: Path) -> str:
    try:
        summary = json.loads(sidecars(part).summary.read_text(encoding="utf-8"))
        policy = str(summary.get("config", {}).get("evidence_policy", "report"))
        return band_label(float(summary["threshold"]), float(summary["real_below"]), policy)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def _rows(parts: Sequence[Path], seen: set[str], report: MergeReport) -> Iterator[Row]:
    for part in parts:
        for row in iter_rows(part):
            if row.path in seen:
                report.doubled.append(row.path)
                continue
            seen.add(row.path)
            report.rows += 1
            yield row
