"""The crash-safe writer: rows go to a journal beside the output (CSV, or JSON lines for
jsonl/parquet), flushed per batch and fsynced at most once a second; a finished run
publishes it over the output atomically (parquet converts it first). ``resume`` reads
the journal (or the finished output), drops a torn last record, and continues: every file
ends up exactly once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from aiscan.model.errors import AiscanError
from aiscan.model.files import write_atomic

from ..core.rows import Row
from .formats import (
    FORMAT_HANDLERS,
    FORMATS,
    Lines,
    Recovered,
    VerdictFileError,
    detect_format,
)
from .lock import OutputLock
from .sidecars import sidecars


class OutputExistsError(AiscanError, FileExistsError):
    """The output file exists and neither resume nor overwrite was asked for."""


class VerdictWriter:
    """Appends rows to a journal next to ``out`` and publishes it atomically when done.

    Args:
        out: the final output path.
        fmt: "csv", "jsonl" or "parquet".
        resume: continue from an existing partial or finished output.
        overwrite: replace an existing output instead of refusing.
    """

    def __init__(
        self,
        out: str | Path,
        fmt: str = "csv",
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.out = Path(out)
        self.fmt = fmt
        self._format = FORMAT_HANDLERS[fmt]
        self.journal = sidecars(self.out).journal(fmt)
        self.recovered = Recovered()
        self._last_sync = 0.0
        self._reopened = False  # the journal is a copy of a finished output, made here
        self._lock = OutputLock(self.out)  # before looking at what is there
        try:
            exists = self.out.exists() or self.journal.exists()
            if exists and not resume and not overwrite:
                raise OutputExistsError(
                    f"{self.out if self.out.exists() else self.journal} exists: pass --resume "
                    "to continue that scan, or --overwrite to start again"
                )
            if resume and exists:
                self._recover()
            else:
                self._start_journal([])
            self._fh: IO[str] = self.journal.open("a", newline="", encoding="utf-8")
        except BaseException:
            if self._reopened:
                self.journal.unlink(missing_ok=True)
            self._lock.release()
            raise

    def _start_journal(self, rows: list[Row]) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.journal, self._encode(rows, header=True))

    def _recover(self) -> None:
        """Find what is already written; cut a torn last record off the journal."""
        if self.out.exists() and self.out.stat().st_size and detect_format(self.out) != self.fmt:
            raise VerdictFileError(
                f"{self.out} was written as {detect_format(self.out)}: resume "
                f"it with --format {detect_format(self.out)}"
            )
        if not self.journal.exists():
            # A finished output: it becomes the journal again, so new rows extend it.
            self._format.reopen(self.out, self.journal, self._start_journal)
            self._reopened = True
        with self.journal.open("rb") as fh:
            valid = self._format.recover(self.journal, Lines(fh), self.recovered)
        if valid == 0 and self._format.header:
            self._start_journal([])
        elif valid < self.journal.stat().st_size:
            with self.journal.open("r+b") as fh:
                fh.truncate(valid)
                os.fsync(fh.fileno())

    def _encode(self, rows: Iterable[Row], header: bool = False) -> str:
        return self._format.encode(rows, header)

    def write(self, rows: list[Row]) -> None:
        """Append a batch of rows; flushed now, fsynced at most once a second."""
        if not rows:
            return
        self._fh.write(self._encode(rows))
        self._fh.flush()
        now = time.monotonic()
        if now - self._last_sync > 1.0:
            os.fsync(self._fh.fileno())
            self._last_sync = now

    def finish(self) -> Path:
        """Publish the output: fsync, convert if needed, rename over ``out``; unlock."""
        self._close_journal()
        try:
            self._format.publish(self.journal, self.out)
        finally:
            self._lock.release()
        return self.out

    def abandon(self) -> None:
        """Stop before writing anything (a resume refused): a journal made here from the
        finished output goes again, so the output is left as it was found."""
        try:
            self._close_journal()
            if self._reopened:
                self.journal.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop writing without publishing (interrupted run); the journal stays."""
        try:
            self._close_journal()
        finally:
            self._lock.release()

    def _close_journal(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
