"""Incremental nightly scans: what was judged, of which file, by which model, in SQLite.

``aiscan STORE --state scans.db --out tonight.csv`` scans only what is new or changed
since the last night (size or mtime differs; with ``--sha256`` the content), re-judges
what another model or threshold judged, reuses the verdict of identical content (same
sha256, same model) without decoding it again, and reports files that disappeared.

Crash safety: tonight's rows go to the output journal first, then into the database in
one transaction per batch. A rerun after a crash resumes the journal, copies its rows
into the database (idempotent), and scans only what neither holds: nothing is lost or
doubled. One run at a time holds ``scans.db.lock``. The schema carries its version and a
list of migrations; a database from a newer aiscan is refused.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from aiscan.model.errors import AiscanError, MachineError

from ..core.discovery import Found, in_shard
from ..core.rows import ROW_FIELDS, ROW_SCHEMA, Row
from ..output.lock import OutputLock


def _row_columns(added: bool) -> str:
    """DDL of the files table's row columns, from the row schema table
    (:data:`~aiscan.scanner.core.rows.ROW_SCHEMA`): the path is the key, the columns a
    row cannot lack (no default) are NOT NULL. ``added``: the columns added to rows after
    the first schema (each comes with a migration of its own, below)."""
    out = []
    for c in ROW_SCHEMA:
        if c.added != added:
            continue
        key = " PRIMARY KEY" if c.name == "path" else ""
        required = " NOT NULL" if c.default is MISSING and c.name != "path" else ""
        out.append(f"{c.name} {c.sqlite}{key}{required}")
    return ", ".join(out)


def _add_column(name: str) -> str:
    """The migration that adds row column ``name`` (its type from the schema table)."""
    (col,) = [c for c in ROW_SCHEMA if c.name == name]
    return f"ALTER TABLE files ADD COLUMN {col.name} {col.sqlite};"


#: Each migration takes the schema one version up; the index is the version it leaves.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT,
        model_sha256 TEXT NOT NULL, threshold REAL NOT NULL, roots TEXT NOT NULL
    );
    CREATE TABLE files (
        {_row_columns(added=False)},
        size INTEGER, mtime_ns INTEGER,
        model_sha256 TEXT NOT NULL, threshold REAL NOT NULL, scanned_run INTEGER NOT NULL,
        seen_run INTEGER NOT NULL, deleted_run INTEGER
    );
    CREATE INDEX files_sha256 ON files (sha256, model_sha256);
    CREATE INDEX files_seen ON files (seen_run);
    """,
    # 2: each finished run keeps its own figures, for tonight-against-last-night drift
    "ALTER TABLE runs ADD COLUMN stats TEXT;",
    # 3: the uncertain band's lower edge is part of a verdict (NULL: no band, as before)
    "ALTER TABLE files ADD COLUMN real_below REAL;",
    # 4: each row records what judged it (its band and evidence policy, beside its model)
    _add_column("band"),
]
SCHEMA_VERSION = len(MIGRATIONS)
_SEEN_FLUSH = 5000
T = TypeVar("T")


class StateError(AiscanError, RuntimeError):
    """The state database cannot be used; the message says why."""


class StateEnvironmentError(StateError, MachineError):
    """The state database's disk, permissions or I/O failed (exit 3); what it committed
    before is kept."""


#: sqlite3's messages that name a fault of the machine, not of the database.
_ENVIRONMENT = ("disk is full", "disk i/o error", "readonly", "unable to open", "out of memory")


def state_error(path: Path, exc: sqlite3.Error) -> StateError:
    """One sqlite3 error as the one-line error the user sees: the environment's (exit 3:
    free space, fix permissions, rerun: nothing committed is lost) or the database's
    (exit 2: not aiscan's, or damaged: check it, restore a backup)."""
    text = str(exc)
    if any(key in text.lower() for key in _ENVIRONMENT):
        return StateEnvironmentError(
            f"the state database {path} could not be written ({text}): free space or fix "
            "permissions there and rerun the same command; what it committed is kept"
        )
    return StateError(
        f"{path} is not a usable aiscan state database ({text}): if it is aiscan's, check "
        f"it with sqlite3 {path} 'PRAGMA integrity_check' and restore it from a backup"
    )


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """A ScanState method whose sqlite3 errors become :func:`state_error`'s."""

    @functools.wraps(method)
    def call(self: ScanState, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise state_error(self.path, exc) from exc

    return call


#: Drift bounds between tonight's scanned files and the previous night's: AI rate and
#: error rate (absolute), and the total variation distance of the p_ai histograms.
DRIFT_BOUNDS = {"ai_rate": 0.10, "error_rate": 0.05, "histogram_tv": 0.20}
#: Below this many judged files in either night, drift is not assessed.
DRIFT_MIN_FILES = 100
_BINS = 10


@dataclass
class NightFigures:
    """One night's scanned files, summed up for comparison with another night's."""

    files: int = 0
    errors: int = 0
    judged: int = 0
    ai: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * _BINS)

    def add(self, rows: Iterable[Row]) -> None:
        for r in rows:
            self.files += 1
            self.errors += r.status == "error"
            if r.p_ai is not None:
                self.judged += 1
                self.ai += r.verdict == "ai"
                self.histogram[min(_BINS - 1, int(r.p_ai * _BINS))] += 1

    def rates(self) -> dict[str, float]:
        return {
            "ai_rate": self.ai / self.judged if self.judged else 0.0,
            "error_rate": self.errors / self.files if self.files else 0.0,
        }


def drift(tonight: NightFigures, before: NightFigures) -> dict[str, Any]:
    """Tonight against the previous night: each figure, and which exceed DRIFT_BOUNDS."""
    if min(tonight.judged, before.judged) < DRIFT_MIN_FILES:
        return {"assessed": False, "reason": f"fewer than {DRIFT_MIN_FILES} judged files"}
    now, then = tonight.rates(), before.rates()
    tv = 0.5 * sum(
        abs(a / tonight.judged - b / before.judged)
        for a, b in zip(tonight.histogram, before.histogram, strict=True)
    )
    deltas = {k: now[k] - then[k] for k in now} | {"histogram_tv": tv}
    flagged = [k for k, v in deltas.items() if abs(v) > DRIFT_BOUNDS[k]]
    return {"assessed": True, "tonight": now, "before": then, "deltas": deltas, "flagged": flagged}


@dataclass
class StateStats:
    """What tonight's run found, against the state."""

    new: int = 0
    changed: int = 0
    rejudged: int = 0
    unchanged: int = 0
    reused: int = 0
    deleted: int = 0
    deleted_sample: list[str] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)


class ScanState:
    """One state database, locked for the lifetime of a run.

    Args:
        path: the SQLite file (created when absent).
        model_sha256: the model of tonight's run.
        threshold: tonight's threshold.
        real_below: tonight's lower band edge (None: no band); with the threshold and the
            model, what decides whether a stored verdict still stands.
        content: compare content (sha256) rather than size and mtime.
        judge: tonight's (model label, band) as rows record them
            (:attr:`~aiscan.scanner.core.rows.Row.judge`). A row is stored with the judge
            it records, not tonight's: rows of a crashed night's journal judged by another
            model or band are re-judged by the next night, never taken for tonight's.
    """

    def __init__(
        self,
        path: str | Path,
        model_sha256: str,
        threshold: float,
        *,
        content: bool = False,
        real_below: float | None = None,
        judge: tuple[str, str] = ("", ""),
    ) -> None:
        self.path = Path(path)
        self.judge = judge
        self.model_sha256, self.threshold, self.content = model_sha256, threshold, content
        self.real_below = None if real_below is None or real_below >= threshold else real_below
        self._lock = OutputLock(self.path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.Error as exc:
            self._lock.release()
            raise state_error(self.path, exc) from exc
        except BaseException:
            self._lock.release()
            raise
        self._mutex = threading.Lock()
        self._closed = False
        self._seen: list[tuple[int, bytes]] = []
        self.stats = StateStats()
        self.figures = NightFigures()
        self.run_id = 0

    def _migrate(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        version = 0
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {version}, made by a newer aiscan "
                f"(this one knows up to {SCHEMA_VERSION}); upgrade aiscan"
            )
        for step in range(version, SCHEMA_VERSION):
            # the step and its version number in one transaction: a crash leaves neither
            self._db.executescript(
                f"BEGIN; {MIGRATIONS[step]}\n"
                f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{step + 1}'); COMMIT;"
            )

    # -- a run ------------------------------------------------------------------------

    @_guarded
    def begin(self, roots: Sequence[str]) -> int:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        cur = self._db.execute(
            "INSERT INTO runs (started, model_sha256, threshold, roots) VALUES (?, ?, ?, ?)",
            (now, self.model_sha256, self.threshold, "\n".join(roots)),
        )
        self.run_id = int(cur.lastrowid or 0)
        self.roots = [os.path.abspath(r) for r in roots]
        return self.run_id

    @_guarded
    def needs_scan(self, found: Found) -> bool:
        """True when ``found`` must be scanned tonight; otherwise it is marked as seen.
        Called from the scan's walk thread, which alone counts new, changed, rejudged and
        unchanged files (:attr:`stats`) until :meth:`finish`."""
        if found.error or found.skip_reason:
            return True  # always a fresh row for what cannot be scanned
        try:
            st = os.stat(found.path)
        except OSError:
            return True  # the decode stage says why
        with self._mutex:
            if self._closed:  # a walk stopped late, after the scan closed the state
                return True
            row = self._db.execute(
                "SELECT size, mtime_ns, sha256, model_sha256, threshold, deleted_run, real_below, "
                "model, band FROM files WHERE path = ?",
                (os.fsencode(found.path),),
            ).fetchone()
        reason = self._reason(row, st)
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        if reason == "unchanged":
            self._mark_seen(found.path)
        return reason != "unchanged"

    def _reason(self, row: tuple[Any, ...] | None, st: os.stat_result) -> str:
        if row is None or row[5] is not None:
            return "new"
        size, mtime_ns, sha256, model, threshold, _, real_below, label, band = row
        if size != st.st_size or (mtime_ns != st.st_mtime_ns and not self.content):
            return "changed"
        if self.content and (sha256 is None or mtime_ns != st.st_mtime_ns):
            return "changed"  # content is checked by hashing it again on the scan
        if band:  # the row's own judge, recorded with it
            return "unchanged" if (label, band) == self.judge else "rejudged"
        if (model, threshold, real_below) != (self.model_sha256, self.threshold, self.real_below):
            return "rejudged"
        return "unchanged"

    def _mark_seen(self, path: str) -> None:
        self._seen.append((self.run_id, os.fsencode(path)))
        if len(self._seen) >= _SEEN_FLUSH:
            self._flush_seen()

    @_guarded
    def _flush_seen(self) -> None:
        with self._mutex:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE files SET seen_run = ? WHERE path = ?", self._seen)
            self._db.execute("COMMIT")
            self._seen.clear()

    @_guarded
    def known_p_ai(self, sha256: str) -> float | None:
        """p_ai that tonight's model gave identical content before (any path)."""
        with self._mutex:
            row = self._db.execute(
                "SELECT p_ai FROM files WHERE sha256 = ? AND model_sha256 = ? AND status = 'ok' "
                "AND p_ai IS NOT NULL LIMIT 1",
                (sha256, self.model_sha256),
            ).fetchone()
        return None if row is None else float(row[0])

    @_guarded
    def record(self, rows: Iterable[Row]) -> None:
        """Store rows written tonight (one transaction; idempotent)."""
        records = []
        rows = list(rows)
        self.figures.add(rows)
        for r in rows:
            size: int | None
            mtime: int | None
            try:
                st = os.stat(r.path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = r.bytes, None
            records.append((*_db_values(r), size, mtime, *self._judged(r)))
        with self._mutex:
            self._db.execute("BEGIN")
            self._db.executemany(
                _INSERT,
                records,
            )
            self._db.execute("COMMIT")

    def _judged(self, row: Row) -> tuple[Any, ...]:
        """The state's columns of who judged ``row``: tonight's model and edges where the
        row records tonight's judge (or none: error and skipped rows); otherwise the row's
        own model label in place of a hash, so that neither the next night's comparison
        nor the reuse of identical content ever takes it for tonight's model."""
        mine = row.status != "ok" or row.judge == self.judge
        model = self.model_sha256 if mine else f"other:{row.model}"
        threshold, real_below = (self.threshold, self.real_below) if mine else (-1.0, None)
        return (model, threshold, self.run_id, self.run_id, real_below)

    @_guarded
    def finish(self, shard: tuple[int, int], reused: int = 0) -> StateStats:
        """Close tonight's run: files under tonight's roots (and shard) that were not seen
        are marked deleted; ``reused`` is how many rows took a known verdict (the scan
        counts them)."""
        self._flush_seen()
        with self._mutex:
            gone = [
                os.fsdecode(p)
                for (p,) in self._db.execute(
                    "SELECT path FROM files WHERE seen_run < ? AND deleted_run IS NULL",
                    (self.run_id,),
                )
            ]
            gone = [p for p in gone if self._under_roots(p) and in_shard(p, *shard)]
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE files SET deleted_run = ? WHERE path = ?",
                [(self.run_id, os.fsencode(p)) for p in gone],
            )
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._db.execute(
                "UPDATE runs SET finished = ?, stats = ? WHERE id = ?",
                (now, json.dumps(asdict(self.figures)), self.run_id),
            )
            previous = self._db.execute(
                "SELECT stats FROM runs WHERE id < ? AND finished IS NOT NULL AND stats IS NOT "
                "NULL ORDER BY id DESC LIMIT 1",
                (self.run_id,),
            ).fetchone()
            self._db.execute("COMMIT")
        self.stats.deleted, self.stats.deleted_sample = len(gone), sorted(gone)[:100]
        self.stats.reused = reused
        if previous is not None:
            self.stats.drift = drift(self.figures, NightFigures(**json.loads(previous[0])))
        return self.stats

    def _under_roots(self, path: str) -> bool:
        return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def close(self) -> None:
        if self._seen:
            self._flush_seen()
        with self._mutex:  # never under a query of another thread (the walk's)
            self._db.close()
            self._closed = True
        self._lock.release()


def current_rows(path: str | Path) -> Iterable[Row]:
    """Every file's latest verdict in a state database (deleted files left out)."""
    db = Path(path)
    if not db.is_file():
        raise StateError(f"no such state database: {db}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        query = f"SELECT {', '.join(ROW_FIELDS)} FROM files WHERE deleted_run IS NULL ORDER BY path"
        for rec in con.execute(query):
            yield _row_of(rec)
    except sqlite3.Error as exc:
        raise state_error(db, exc) from exc
    finally:
        con.close()


#: The columns the state keeps beside a row's, in the order :meth:`ScanState.record`
#: writes them (``deleted_run`` is left NULL: the file is there tonight).
_STATE_COLUMNS = (
    "size", "mtime_ns", "model_sha256", "threshold", "scanned_run", "seen_run", "real_below",
)  # fmt: skip
_INSERT = (
    f"INSERT OR REPLACE INTO files ({', '.join(ROW_FIELDS + _STATE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(ROW_FIELDS) + len(_STATE_COLUMNS)))})"
)


def _db_values(row: Row) -> tuple[Any, ...]:
    """A row's values as the files table stores them (:data:`ROW_SCHEMA`'s SQLite types):
    the path as its exact bytes, a missing sha256 as NULL."""
    values = {name: getattr(row, name) for name in ROW_FIELDS}
    values["path"], values["sha256"] = os.fsencode(row.path), row.sha256 or None
    return tuple(values.values())


def _row_of(rec: sqlite3.Row) -> Row:
    """The inverse of :func:`_db_values` (NULL text as "", a NULL evidence as "none")."""
    values = {c.name: rec[c.name] for c in ROW_SCHEMA}
    values["path"] = os.fsdecode(values["path"])
    for c in ROW_SCHEMA:
        if c.python is str and values[c.name] is None:
            values[c.name] = "none" if c.name == "evidence" else ""
    return Row(**values)
