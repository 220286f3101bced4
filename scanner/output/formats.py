"""The verdict file formats (CSV, JSON lines, Parquet) behind one interface: encoding
rows, recovering a journal's complete records, reading a finished file back, publishing;
and the one rule that picks a format from ``--format`` and the output's suffix
(:func:`resolve_format`)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiscan.model.errors import AiscanError
from aiscan.model.files import replacing

from ..core.errors import ConfigError
from ..core.rows import ROW_FIELDS, ROW_SCHEMA, Row
from .records import (
    COLUMNS,
    RecordError,
    csv_cell,
    record_of,
    row_from_record,
)


class VerdictFileError(AiscanError, ValueError):
    """An existing output cannot be resumed (not aiscan's, or another format)."""


def detect_format(path: Path) -> str:
    """The format a verdict file was written in, from its first bytes."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    return "jsonl" if head[:1] == b"{" else "csv"


@dataclass
class Recovered:
    """What a resumed run finds already written.

    Attributes:
        paths: every path that has a row.
        statuses: row count per status.
        verdicts: row count per verdict.
        judges: row count per judge (model, band) of the rows a model judged
            (:attr:`~aiscan.scanner.core.rows.Row.judge`; the band is "" in files from
            before it was recorded).
    """

    paths: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    judges: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, row: Row) -> None:
        self.paths.add(row.path)
        self.statuses[row.status] += 1
        if row.verdict:
            self.verdicts[row.verdict] += 1
        if row.status == "ok":
            self.judges[row.judge] += 1


def _recovered_row(path: Path, number: int, rec: dict[str, Any]) -> Row:
    """Record ``number`` of a journal as a row, as strictly checked as a written one."""
    try:
        return row_from_record(rec)
    except RecordError as exc:
        raise VerdictFileError(
            f"{path}: record {number} is not a verdict row ({exc}): the file was changed "
            "by something else; give another --out, or --overwrite to scan again"
        ) from None


def _read_rows(path: Path, records: Iterable[dict[str, Any]]) -> Iterator[Row]:
    for number, rec in enumerate(records, 1):
        try:
            yield row_from_record(rec)
        except RecordError as exc:
            raise VerdictFileError(f"{path}: row {number}: {exc}") from None


class Lines:
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
    #: a journal with no complete record still needs this format's header
    header = True

    def encode(self, rows: Iterable[Row], header: bool = False) -> str:
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        if header:
            writer.writerow(COLUMNS)
        writer.writerows([csv_cell(v) for v in record_of(r).values()] for r in rows)
        return buf.getvalue()

    def recover(self, path: Path, lines: Lines, found: Recovered) -> int:
        """Collect a journal's complete records; return the byte length they span."""
        reader = csv.reader(lines)
        valid = 0
        try:
            header = next(reader, None)
            if header != list(COLUMNS):
                raise VerdictFileError(foreign(path, header))
            valid = lines.offset
            for number, rec in enumerate(reader, 1):
                if not lines.complete or len(rec) != len(COLUMNS):
                    break
                found.add(_recovered_row(path, number, dict(zip(COLUMNS, rec, strict=True))))
                valid = lines.offset
        except csv.Error:
            pass  # a torn quoted field at the very end
        return valid

    def read(self, path: Path) -> Iterator[Row]:
        with path.open(encoding="utf-8", newline="") as fh:
            try:
                yield from _read_rows(path, csv.DictReader(fh))
            except csv.Error as exc:  # a field over csv's limit: not this writer's file
                raise VerdictFileError(
                    f"{path}: not a verdict file this aiscan wrote ({exc})"
                ) from None

    def publish(self, journal: Path, out: Path) -> None:
        journal.replace(out)

    def reopen(self, out: Path, journal: Path, start: Callable[[list[Row]], None]) -> None:
        """Make a finished output the journal again, so that new rows extend it."""
        with replacing(journal) as tmp:
            shutil.copyfile(out, tmp)


class _Jsonl(_Csv):
    """JSON lines: one object per row; the journal is the file itself."""

    name = "jsonl"
    header = False

    def encode(self, rows: Iterable[Row], header: bool = False) -> str:
        return "".join(json.dumps(record_of(r), ensure_ascii=False) + "\n" for r in rows)

    def recover(self, path: Path, lines: Lines, found: Recovered) -> int:
        valid = 0
        for number, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if not lines.complete:
                break
            if not isinstance(rec, dict) or "path_escaped" not in rec:
                raise VerdictFileError(foreign(path, list(rec) if isinstance(rec, dict) else []))
            found.add(_recovered_row(path, number, rec))
            valid = lines.offset
        return valid

    def read(self, path: Path) -> Iterator[Row]:
        with path.open(encoding="utf-8") as fh:
            yield from _read_rows(path, (json.loads(line) for line in fh if line.strip()))


class _Parquet(_Jsonl):
    """Parquet: journalled as JSON lines, converted when the scan finishes."""

    name = "parquet"

    def read(self, path: Path) -> Iterator[Row]:
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=10_000)
        yield from _read_rows(path, (rec for batch in batches for rec in batch.to_pylist()))

    def publish(self, journal: Path, out: Path) -> None:
        jsonl_to_parquet(journal, out)
        journal.unlink()

    def reopen(self, out: Path, journal: Path, start: Callable[[list[Row]], None]) -> None:
        start(list(self.read(out)))


#: One writer and reader per output format, behind one interface.
FORMAT_HANDLERS: dict[str, _Csv] = {f.name: f for f in (_Csv(), _Jsonl(), _Parquet())}


#: The output formats' names, as the command line offers them.
FORMATS = tuple(FORMAT_HANDLERS)


#: The file name suffix of each format: what decides the format when none is given.
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


def resolve_format(out: str | Path | None, fmt: str | None = None) -> str:
    """The format a verdict file ``out`` is written in: ``fmt`` when given, else the one
    its suffix names; one rule for the scan, ``merge`` and ``export-state``. Without a
    file (rows only), ``fmt`` is checked alone and CSV is the default.

    Raises:
        ConfigError: an unknown format; a suffix that names no format while ``fmt`` is
            absent; a ``fmt`` that contradicts the suffix; Parquet without pyarrow.
    """
    suffix = "" if out is None else Path(out).suffix.lower()
    named = SUFFIXES.get(suffix)
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt is None and out is None:
        fmt = "csv"
    elif fmt is None:
        if named is None:
            raise ConfigError(
                f"--out {out}: the suffix {suffix or '(none)'} names no format; end the name "
                f"in {', '.join(SUFFIXES)}, or give --format {{{','.join(FORMATS)}}}"
            )
        fmt = named
    elif named is not None and named != fmt:
        raise ConfigError(f"--out {out} names {named} but --format is {fmt}: make them agree")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("--format parquet needs pyarrow: pip install 'aiscan-batch[parquet]'")
    return fmt


def foreign(path: Path, columns: list[str] | None) -> str:
    if columns and set(ROW_FIELDS) <= set(columns):
        return (
            f"{path} was written by an older aiscan (its columns differ from this version's): "
            "give another --out, or --overwrite to scan again"
        )
    return f"{path} is not an aiscan verdict file (its header differs); give another --out"


def jsonl_to_parquet(src: Path, dst: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # resolve_format checks it first; kept as a guard
        raise RuntimeError(
            "--format parquet needs pyarrow: pip install 'aiscan-batch[parquet]'"
        ) from exc
    with src.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    schema = pa.schema(
        [(c.name, getattr(pa, c.arrow)()) for c in ROW_SCHEMA] + [("path_escaped", pa.bool_())]
    )
    table = pa.Table.from_pylist(records, schema=schema)
    with replacing(dst) as tmp:
        pq.write_table(table, tmp)


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Stream the rows of a finished verdict file of any format (bounded memory)."""
    path = Path(path)
    return FORMAT_HANDLERS[detect_format(path)].read(path)


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
