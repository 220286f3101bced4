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

#: A row's verdict: "" where no model judged the file (a skipped or error row).
Verdict = Literal["ai", "uncertain", "real", ""]
ROW_VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

#: Arrow type name -> the Python type of a (non-null) value.
_PYTHON = {"string": str, "float32": float, "int32": int, "int64": int}


def as_status(value: str) -> Status:
    """``value`` as a :data:`Status`; ValueError if it is none of them."""
    for status in STATUSES:
        if value == status:
            return status
    raise ValueError(f"status must be one of {STATUSES}, got {value!r}")


def _col(arrow: str, sqlite: str, nullable: bool = False, added: bool = False) -> dict[str, Any]:
    """A column's types in each store, as a field's metadata; ``added``: a column that
    files and databases from before it lack (they read as its default)."""
    return {"arrow": arrow, "sqlite": sqlite, "nullable": nullable, "added": added}


@dataclass(frozen=True, kw_only=True)
class Row:
    """One verdict. The column order of every verdict file is the field order here.

    Built by keyword only, so that a column added here can never shift another's value.
    ``model`` and ``band`` together say what judged the row (the model's id and hash; its
    edges and evidence policy, :func:`aiscan.model.meta.band_label`): every place that
    combines rows (resume, merge, the nightly state) compares them. Columns added after
    the first verdict files (``band``) take their default when an older file lacks them.
    """

    path: str = field(metadata=_col("string", "BLOB"))  # SQLite keeps the name's exact bytes
    status: Status = field(metadata=_col("string", "TEXT"))
    p_ai: float | None = field(default=None, metadata=_col("float32", "REAL", nullable=True))
    verdict: Verdict = field(default="", metadata=_col("string", "TEXT"))
    error: str = field(default="", metadata=_col("string", "TEXT"))
    format: str = field(default="", metadata=_col("string", "TEXT"))
    width: int | None = field(default=None, metadata=_col("int32", "INTEGER", nullable=True))
    height: int | None = field(default=None, metadata=_col("int32", "INTEGER", nullable=True))
    bytes: int | None = field(default=None, metadata=_col("int64", "INTEGER", nullable=True))
    sha256: str = field(default="", metadata=_col("string", "TEXT"))
    model: str = field(default="", metadata=_col("string", "TEXT"))
    evidence: str = field(default="none", metadata=_col("string", "TEXT"))
    evidence_detail: str = field(default="", metadata=_col("string", "TEXT"))
    generator_hint: str = field(default="", metadata=_col("string", "TEXT"))
    # columns added later come last, so that every earlier column keeps its position
    band: str = field(default="", metadata=_col("string", "TEXT", added=True))

    @property
    def judge(self) -> tuple[str, str]:
        """(model, band): what judged this row ("", "" for a row no model judged)."""
        return (self.model, self.band) if self.status == "ok" else ("", "")


@dataclass(frozen=True)
class Column:
    """One column of :class:`Row`, with its type in each store.

    Attributes:
        name: the field's and the column's name.
        python: the type of a value (``None`` too, where ``nullable``).
        arrow: its ``pyarrow`` type name.
        sqlite: its SQLite column type.
        nullable: whether a value may be missing (``None``; an empty cell in CSV).
        added: added after the first verdict files: a file without it reads as ``default``.
        default: the field's default.
    """

    name: str
    python: type
    arrow: str
    sqlite: str
    nullable: bool
    added: bool
    default: Any


#: The schema table, in column order.
ROW_SCHEMA: tuple[Column, ...] = tuple(
    Column(f.name, _PYTHON[f.metadata["arrow"]], **f.metadata, default=f.default)
    for f in fields(Row)
)


def as_verdict(value: str) -> Verdict:
    """``value`` as a :data:`Verdict`; ValueError if it is none of them."""
    for v in ROW_VERDICTS:
        if value == v:
            return v
    raise ValueError(f"verdict must be one of {ROW_VERDICTS}, got {value!r}")


#: The fields of a Row, in order.
ROW_FIELDS = tuple(c.name for c in ROW_SCHEMA)


#: What judged a row: (model, band), :attr:`Row.judge`.
Judge = tuple[str, str]


def judge_difference(a: Judge, b: Judge) -> str:
    """How two judges differ, in words: the model, the ``ai`` edge, the ``real`` edge,
    the evidence policy (each that differs), e.g. ``ai edge 0.8 vs 0.9``."""
    parts = []
    if a[0] != b[0]:
        parts.append(f"model {a[0] or 'unknown'} vs {b[0] or 'unknown'}")
    names = {"ai>=": "ai edge", "real<": "real edge", "evidence=": "evidence policy"}
    fa, fb = _band_fields(a[1]), _band_fields(b[1])
    for key, name in names.items():
        if fa.get(key) != fb.get(key):
            parts.append(f"{name} {fa.get(key, 'unrecorded')} vs {fb.get(key, 'unrecorded')}")
    return "; ".join(parts) or "nothing"


def _band_fields(band: str) -> dict[str, str]:
    out = {}
    for part in band.split():
        for key in ("ai>=", "real<", "evidence="):
            if part.startswith(key):
                out[key] = part[len(key) :]
    return out
