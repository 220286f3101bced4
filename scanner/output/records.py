"""A row as a verdict file stores it, and back: paths escaped losslessly into UTF-8
(``path_escaped``), free text made valid UTF-8, CSV cells, typed by the row schema."""

from __future__ import annotations

import math
from dataclasses import astuple
from typing import Any

from aiscan.model.meta import VERDICTS

from ..core.rows import ROW_FIELDS, ROW_SCHEMA, STATUSES, Row

#: The columns of a verdict file: a Row's fields, then ``path_escaped`` (see
#: :func:`escape_path`). Appended last so that earlier columns keep their positions.
COLUMNS = (*ROW_FIELDS, "path_escaped")


#: Text columns: stored as valid UTF-8 (an error message may quote an undecodable path).
TEXT_COLUMNS = tuple(c.name for c in ROW_SCHEMA if c.python is str and c.name != "path")


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


#: The longest free text a cell holds (error messages, evidence details, generator
#: hints are far shorter; a longer one came from a hostile file): cut, and said so.
TEXT_CELL_MAX = 4096


def text_cell(value: str) -> str:
    """Free text (an error message may quote a path): valid UTF-8, undecodable bytes as
    ``\\xNN``, at most :data:`TEXT_CELL_MAX` characters (a longer one is cut and ends in
    ``[cut: N characters]``), so that every reader of a verdict file, CSV's included,
    takes whatever the writer writes."""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if len(text) <= TEXT_CELL_MAX:
        return text
    marker = f"… [cut: {len(text)} characters]"
    return text[: TEXT_CELL_MAX - len(marker)] + marker


def record_of(row: Row) -> dict[str, Any]:
    """A row as the values a verdict file stores, every string valid UTF-8."""
    rec = dict(zip(ROW_FIELDS, astuple(row), strict=True))
    rec["path"], rec["path_escaped"] = escape_path(row.path)
    for key in TEXT_COLUMNS:
        rec[key] = text_cell(rec[key])
    return rec


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return value


class RecordError(ValueError):
    """A stored record that is not a verdict row; the message names the column."""


def row_from_record(rec: dict[str, Any]) -> Row:
    """Rebuild a Row from a stored record (CSV strings, or JSON/Parquet values), held to
    what the writer writes: every column present and of its type, a known status and
    verdict, p_ai a probability, sizes not negative, and p_ai and a verdict exactly on
    "ok" rows.

    Raises:
        RecordError: the record breaks one of these; the message names the column.
    """
    vals: dict[str, Any] = {}
    for col in ROW_SCHEMA:
        if col.name not in rec and col.added:
            vals[col.name] = col.default  # a file from before the column
            continue
        if col.name not in rec:
            raise RecordError(f"no column {col.name!r}")
        vals[col.name] = _typed(col.name, col.python, col.nullable, rec[col.name])
    escaped = rec.get("path_escaped") in (True, "true")
    vals["path"] = unescape_path(vals["path"], escaped)
    _check_values(vals)
    return Row(**vals)


def _typed(name: str, kind: type, nullable: bool, value: Any) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise RecordError(f"column {name!r}: {value!r} is not text")
        return value
    if value is None or value == "":
        if not nullable:
            raise RecordError(f"column {name!r} is empty")
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise RecordError(f"column {name!r}: {str(value)[:40]!r} is not a number") from None
    if kind is float and not math.isfinite(number):
        raise RecordError(f"column {name!r}: {value!r} is not finite")
    return number


def _check_values(vals: dict[str, Any]) -> None:
    status, p_ai, verdict = vals["status"], vals["p_ai"], vals["verdict"]
    if status not in STATUSES:
        raise RecordError(f"column 'status': {status[:40]!r} is none of {', '.join(STATUSES)}")
    if verdict not in ("", *VERDICTS):
        raise RecordError(f"column 'verdict': {verdict[:40]!r} is none of {', '.join(VERDICTS)}")
    if p_ai is not None and not 0.0 <= p_ai <= 1.0:
        raise RecordError(f"column 'p_ai': {p_ai!r} is not within [0, 1]")
    if (status == "ok") != (p_ai is not None) or (status == "ok") != bool(verdict):
        raise RecordError(
            f"columns 'status', 'p_ai', 'verdict' disagree ({status}, {p_ai}, {verdict or 'none'})"
        )
    for name in ("width", "height", "bytes"):
        if vals[name] is not None and vals[name] < 0:
            raise RecordError(f"column {name!r}: {vals[name]} is negative")
