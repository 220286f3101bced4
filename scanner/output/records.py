"""A row as a verdict file stores it, and back: paths escaped losslessly into UTF-8
(``path_escaped``), free text made valid UTF-8, CSV cells, typed by the row schema."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

from ..core.rows import ROW_FIELDS, ROW_SCHEMA, Row

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


def row_from_record(rec: dict[str, Any]) -> Row:
    """Rebuild a Row from a stored record: CSV strings, or JSON/Parquet values."""
    escaped = rec.get("path_escaped") in (True, "true")
    vals: dict[str, Any] = dict(rec)
    vals["path"] = unescape_path(rec["path"], escaped)
    for col in ROW_SCHEMA:
        value = rec[col.name]
        if col.python is not str and isinstance(value, str):  # a CSV cell
            vals[col.name] = col.python(value) if value else None
    return Row(**{c: vals[c] for c in ROW_FIELDS})
