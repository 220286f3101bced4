"""Files that appear whole or not at all: one helper for every writer of aiscan."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

#: The suffix of a file being written beside its final name.
TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an
    exception, it replaces ``path`` atomically (``os.replace``); otherwise it is removed
    and ``path`` is as it was."""
    target = Path(path)
    tmp = target.with_name(target.name + TMP_SUFFIX)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, fsync: bool = True) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` all at once: a reader sees the old file
    or the new one, never a part; with ``fsync``, the new one survives a power cut."""
    with replacing(path) as tmp, tmp.open("wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
