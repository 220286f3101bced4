"""Verdict files, on top of the core: the formats (CSV, JSON lines, Parquet) and their
readers, the crash-safe writer with its journal, the lock that keeps a second run out,
and the names of the files beside an output (:func:`sidecars`)."""

from .formats import FORMATS, VerdictFileError, chunked, detect_format, iter_rows, read_rows
from .lock import OutputLock, OutputLockedError
from .records import escape_path, unescape_path
from .writer import OutputExistsError, VerdictWriter

__all__ = [
    "FORMATS",
    "OutputExistsError",
    "OutputLock",
    "OutputLockedError",
    "VerdictFileError",
    "VerdictWriter",
    "chunked",
    "detect_format",
    "escape_path",
    "iter_rows",
    "read_rows",
    "unescape_path",
]
