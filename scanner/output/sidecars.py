"""The files a run keeps beside its output, named in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiscan.model.files import TMP_SUFFIX

#: The journal beside the output, per format: the rows written so far (CSV's is the CSV
#: itself; JSON lines' and Parquet's are JSON lines, converted when the run finishes).
JOURNAL_SUFFIXES = {"csv": ".partial", "jsonl": ".partial.jsonl", "parquet": ".partial.jsonl"}


@dataclass(frozen=True)
class Sidecars:
    """The files beside one output ``out``.

    Attributes:
        out: the verdict file.
    """

    out: Path

    def _beside(self, suffix: str) -> Path:
        return self.out.with_name(self.out.name + suffix)

    def journal(self, fmt: str) -> Path:
        """The rows written so far, before the output is published."""
        return self._beside(JOURNAL_SUFFIXES[fmt])

    @property
    def summary(self) -> Path:
        """The run's JSON summary."""
        return self._beside(".summary.json")

    @property
    def lock(self) -> Path:
        """The lock a live run holds (:class:`~.lock.OutputLock`)."""
        return self._beside(".lock")

    def all(self) -> list[Path]:
        """Every file a run may write for this output, temporaries included (never
        scanned, should the output lie inside a scanned folder)."""
        names = [self.out, self.summary, self.lock, *map(self.journal, JOURNAL_SUFFIXES)]
        unique = list(dict.fromkeys(names))
        return unique + [p.with_name(p.name + TMP_SUFFIX) for p in unique if p != self.lock]


def sidecars(out: str | Path) -> Sidecars:
    """The files beside the output ``out``."""
    return Sidecars(Path(out))
