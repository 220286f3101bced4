"""Verdict files: one row per discovered file, crash-safe, resumable.

Rows go to ``<out>.partial`` (CSV, or JSON lines for jsonl/parquet), flushed per batch and
fsynced at most once a second; a finished run renames it to ``<out>`` atomically (parquet
converts it first). ``--resume`` reads the partial file (or the finished one), drops a torn
last record, and continues: every file ends up exactly once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Literal, get_args

from aiscan.model.errors import AiscanError

#: What became of a file: "ok" (classified), "skipped" (deliberately not scanned: not an
#: image, not a regular file) or "error" (an image that could not be classified).
Status = Literal["ok", "skipped", "error"]
STATUSES: tuple[Status, ...] = get_args(Status)


def as_status(value: str) -> Status:
    """``value`` as a :data:`Status`; ValueError if it is none of them."""
    for status in STATUSES:
        if value == status:
            return status
    raise ValueError(f"status must be one of {STATUSES}, got {value!r}")


@dataclass(frozen=True)
class Row:
    """One verdict. The column order of the file is the field order here."""

    path: str
    status: Status
    p_ai: float | None
    verdict: str
    error: str
    format: str
    width: int | None
    height: int | None
    bytes: int | None
    sha256: str
    model: str
    evidence: str = "none"
    evidence_detail: str = ""
    generator_hint: str = ""


#: The fields of a Row, in order.
ROW_FIELDS = tuple(f.name for f in fields(Row))
#: The columns of a verdict file: a Row's fields, then ``path_escaped`` (see
#: :func:`escape_path`). Appended last so that earlier columns keep their positions.
COLUMNS = (*ROW_FIELDS, "path_escaped")
_INT_COLUMNS = ("width", "height", "bytes")


def escape_path(path: str) -> tuple[str, bool]:
    """A path as valid UTF-8 text, losslessly: ``(text, escaped)``.

    Paths come from the file system as ``str`` where bytes that are not UTF-8 are
    surrogates (Python's ``surrogateescape``). Such a path is written with each of those
    bytes as ``\\xNN`` and each backslash doubled, and ``escaped`` is true; any other path
    is written as it is. :func:`unescape_path` gives the original back
    (``os.fsencode`` of it is the exact bytes of the name).
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return path, False
    out = []
    for ch in path.replace("\\", "\\\\"):
        code = ord(ch)
        out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else ch)
    return "".join(out), True


def unescape_path(text: str, escaped: bool) -> str:
    """Inverse of :func:`escape_path`."""
    if not escaped:
        return text
    out, i = [], 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out.append("\\")
            i += 2
        elif text.startswith("\\x", i):
            out.append(chr(0xDC00 + int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _text(value: str) -> str:
    """Free text (an error message may quote a path): valid UTF-8, undecodable bytes as
    ``\\xNN``."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _record(row: Row) -> dict[str, Any]:
    """A row as the values a verdict file stores, every string valid UTF-8."""
    rec = dict(zip(ROW_FIELDS, astuple(row), strict=True))
    rec["path"], rec["path_escaped"] = escape_path(row.path)
    for key in ("error", "format", "model", "evidence_detail", "generator_hint"):
        rec[key] = _text(rec[key])
    return rec


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return value


def row_from_record(rec: dict[str, Any]) -> Row:
    """Rebuild a Row from a stored record: CSV strings, or JSON/Parquet values."""
    escaped = rec.get("path_escaped") in (True, "true")
    vals: dict[str, Any] = dict(rec)
    vals["path"] = unescape_path(rec["path"], escaped)
    if isinstance(rec["p_ai"], str):
        vals["p_ai"] = float(rec["p_ai"]) if rec["p_ai"] else None
    for col in _INT_COLUMNS:
        if isinstance(rec[col], str):
            vals[col] = int(rec[col]) if rec[col] else None
    return Row(**{c: vals[c] for c in ROW_FIELDS})


class VerdictFileError(AiscanError, ValueError):
    """An existing output cannot be resumed (not aiscan's, or another format)."""


def detect_format(path: Path) -> str:
    """The format a verdict file was written in, from its first bytes."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    return "jsonl" if head[:1] == b"{" else "csv"


class OutputExistsError(AiscanError, FileExistsError):
    """The output file exists and neither resume nor overwrite was asked for."""


class OutputLockedError(AiscanError, RuntimeError):
    """Another live run holds the output's lock."""


class OutputLock:
    """An exclusive lock on one output, held for a run's lifetime: ``<out>.lock``.

    ``flock`` on a lock file beside the output (never on the journal, which is replaced
    by renames). The lock dies with its process, so a crashed run never blocks the next
    one. The holder writes its pid, host and start time into the file for the error a
    second run prints. On release the file is removed while still locked; a run that
    locked a file just removed notices (its inode is no longer the path's) and retries,
    as SQLite-style lock files do.
    """

    def __init__(self, out: Path) -> None:
        import fcntl
        import socket

        self.path = out.with_name(out.name + ".lock")
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(
                    f"another aiscan run is writing {out} ({holder}); wait for it to end "
                    f"or stop it (its lock: {self.path})"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a lock file its holder removed meanwhile: take the new one
        else:
            raise OutputLockedError(f"could not take the lock {self.path}")
        self._fd: int | None = fd
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing releases the flock
        self._fd = None


@dataclass
class Recovered:
    """What a resumed run finds already written.

    Attributes:
        paths: every path that has a row.
        statuses: row count per status.
        verdicts: row count per verdict.
    """

    paths: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)

    def add(self, path: str, status: str, verdict: str) -> None:
        self.paths.add(path)
        self.statuses[status] += 1
        if verdict:
            self.verdicts[verdict] += 1


class _Lines:
    """Iterate a binary file's lines as text, tracking the byte offset consumed."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.offset = 0
        self.complete = True

    def __iter__(self) -> Iterator[str]:
        for raw in self._fh:
            self.offset += len(raw)
            self.complete = raw.endswith(b"\n")
            yield raw.decode("utf-8", "surrogateescape")


class _Csv:
    """CSV: a header, then one record per row; the journal is the file itself."""

    name = "csv"
    journal_suffix = ".partial"
    #: a journal with no complete record still needs this format's header
    header = True

    def encode(self, rows: Iterable[Row], header: bool = False) -> str:
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        if header:
            writer.writerow(COLUMNS)
        writer.writerows([_csv_cell(v) for v in _record(r).values()] for r in rows)
        return buf.getvalue()

    def scan(self, path: Path, lines: _Lines, found: Recovered) -> int:
        """Collect a journal's complete records; return the byte length they span."""
        reader = csv.reader(lines)
        valid = 0
        try:
            header = next(reader, None)
            if header != list(COLUMNS):
                raise VerdictFileError(_foreign(path, header))
            valid = lines.offset
            for rec in reader:
                if not lines.complete or len(rec) != len(COLUMNS):
                    break
                found.add(unescape_path(rec[0], rec[-1] == "true"), rec[1], rec[3])
                valid = lines.offset
        except csv.Error:
            pass  # a torn quoted field at the very end
        return valid

    def read(self, path: Path) -> Iterator[Row]:
        with path.open(encoding="utf-8", newline="") as fh:
            yield from (row_from_record(r) for r in csv.DictReader(fh))

    def publish(self, journal: Path, out: Path) -> None:
        journal.replace(out)

    def reopen(self, out: Path, journal: Path, start: Callable[[list[Row]], None]) -> None:
        """Make a finished output the journal again, so that new rows extend it."""
        tmp = journal.with_name(journal.name + ".tmp")
        shutil.copyfile(out, tmp)
        tmp.replace(journal)


class _Jsonl(_Csv):
    """JSON lines: one object per row; the journal is the file itself."""

    name = "jsonl"
    journal_suffix = ".partial.jsonl"
    header = False

    def encode(self, rows: Iterable[Row], header: bool = False) -> str:
        return "".join(json.dumps(_record(r), ensure_ascii=False) + "\n" for r in rows)

    def scan(self, path: Path, lines: _Lines, found: Recovered) -> int:
        valid = 0
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if not lines.complete:
                break
            if "path_escaped" not in rec:
                raise VerdictFileError(_foreign(path, list(rec)))
            found.add(
                unescape_path(rec["path"], rec["path_escaped"]), rec["status"], rec["verdict"]
            )
            valid = lines.offset
        return valid

    def read(self, path: Path) -> Iterator[Row]:
        with path.open(encoding="utf-8") as fh:
            yield from (row_from_record(json.loads(line)) for line in fh if line.strip())


class _Parquet(_Jsonl):
    """Parquet: journalled as JSON lines, converted when the scan finishes."""

    name = "parquet"

    def read(self, path: Path) -> Iterator[Row]:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            yield from (row_from_record(rec) for rec in batch.to_pylist())

    def publish(self, journal: Path, out: Path) -> None:
        _jsonl_to_parquet(journal, out)
        journal.unlink()

    def reopen(self, out: Path, journal: Path, start: Callable[[list[Row]], None]) -> None:
        start(list(self.read(out)))


#: One writer and reader per output format, behind one interface.
_FORMATS: dict[str, _Csv] = {f.name: f for f in (_Csv(), _Jsonl(), _Parquet())}
#: The output formats' names, as the command line offers them.
FORMATS = tuple(_FORMATS)


def _foreign(path: Path, columns: list[str] | None) -> str:
    if columns and set(ROW_FIELDS) <= set(columns):
        return (
            f"{path} was written by an older aiscan (its columns differ from this version's): "
            "give another --out, or --overwrite to scan again"
        )
    return f"{path} is not an aiscan verdict file (its header differs); give another --out"


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
        self._format = _FORMATS[fmt]
        self.journal = self.out.with_name(self.out.name + self._format.journal_suffix)
        self.recovered = Recovered()
        self._last_sync = 0.0
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
            self._lock.release()
            raise

    def _start_journal(self, rows: list[Row]) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            fh.write(self._encode(rows, header=True))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.journal)

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
        with self.journal.open("rb") as fh:
            valid = self._format.scan(self.journal, _Lines(fh), self.recovered)
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


def _jsonl_to_parquet(src: Path, dst: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # checked up front by the config; kept as a guard
        raise RuntimeError("--format parquet needs pyarrow: pip install 'aiscan[parquet]'") from exc
    with src.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("status", pa.string()),
            ("p_ai", pa.float32()),
            ("verdict", pa.string()),
            ("error", pa.string()),
            ("format", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("bytes", pa.int64()),
            ("sha256", pa.string()),
            ("model", pa.string()),
            ("evidence", pa.string()),
            ("evidence_detail", pa.string()),
            ("generator_hint", pa.string()),
            ("path_escaped", pa.bool_()),
        ]
    )
    table = pa.Table.from_pylist(records, schema=schema)
    tmp = dst.with_name(dst.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(dst)


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Stream the rows of a finished verdict file of any format (bounded memory)."""
    path = Path(path)
    return _FORMATS[detect_format(path)].read(path)


def chunked(rows: Iterable[Row], size: int = 10_000) -> Iterator[list[Row]]:
    """Rows in lists of ``size`` (the last may be shorter), for batched writes."""
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_rows(path: str | Path) -> list[Row]:
    """Read a finished verdict file of any format back into rows."""
    return list(iter_rows(path))
