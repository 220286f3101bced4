"""The verdict row and its one schema table.

:class:`Row` is the table: each field carries, beside its Python type, its Arrow type
(Parquet files) and its SQLite type (the state database). :data:`ROW_SCHEMA` reads them
off the class; the Parquet schema, the records of every format, the state database's
columns and the Ray engine's codec are all derived from it, so that a column added here
reaches every writer, reader and database at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

#: What became of a file: "ok" (classified), "skipped" (deliberately not scanned: not an
#: image, not a regular file) or "error" (an image that could not be classified).
Status = Literal["ok", "skipped", "error"]
STATUSES: tuple[Status, ...] = get_args(Status)

#: Arrow type name -> the Python type of a (non-null) value.
_PYTHON = {"string": str, "float32": float, "int32": int, "int64": int}


def as_status(value: str) -> Status:
    """``value`` as a :data:`Status`; ValueError if it is none of them."""
    for status in STATUSES:
        if value == status:
            return status
    raise ValueError(f"status must be one of {STATUSES}, got {value!r}")


def _col(arrow: str, sqlite: str, nullable: bool = False) -> dict[str, Any]:
    """A column's types in each store, as a field's metadata."""
    return {"arrow": arrow, "sqlite": sqlite, "nullable": nullable}


@dataclass(frozen=True)
class Row:
    """One verdict. The column order of every verdict file is the field order here."""

    path: str = field(metadata=_col("string", "BLOB"))  # SQLite keeps the name's exact bytes
    status: Status = field(metadata=_col("string", "TEXT"))
    p_ai: float | None = field(metadata=_col("float32", "REAL", nullable=True))
    verdict: str = field(metadata=_col("string", "TEXT"))
    error: str = field(metadata=_col("string", "TEXT"))
    format: str = field(metadata=_col("string", "TEXT"))
    width: int | None = field(metadata=_col("int32", "INTEGER", nullable=True))
    height: int | None = field(metadata=_col("int32", "INTEGER", nullable=True))
    bytes: int | None = field(metadata=_col("int64", "INTEGER", nullable=True))
    sha256: str = field(metadata=_col("string", "TEXT"))
    model: str = field(metadata=_col("string", "TEXT"))
    evidence: str = field(default="none", metadata=_col("string", "TEXT"))
    evidence_detail: str = field(default="", metadata=_col("string", "TEXT"))
    generator_hint: str = field(default="", metadata=_col("string", "TEXT"))


@dataclass(frozen=True)
class Column:
    """One column of :class:`Row`, with its type in each store.

    Attributes:
        name: the field's and the column's name.
        python: the type of a value (``None`` too, where ``nullable``).
        arrow: its ``pyarrow`` type name.
        sqlite: its SQLite column type.
        nullable: whether a value may be missing (``None``; an empty cell in CSV).
    """

    name: str
    python: type
    arrow: str
    sqlite: str
    nullable: bool


#: The schema table, in column order.
ROW_SCHEMA: tuple[Column, ...] = tuple(
    Column(f.name, _PYTHON[f.metadata["arrow"]], **f.metadata) for f in fields(Row)
)
#: The fields of a Row, in order.
ROW_FIELDS = tuple(c.name for c in ROW_SCHEMA)
