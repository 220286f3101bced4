"""Files that appear whole or not at all: one helper for every writer of aiscan."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The suffix of a file being written beside its final name.
TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, unique: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an
    exception, it replaces ``path`` atomically (``os.replace``); otherwise (an error, a
    signal turned into KeyboardInterrupt) it is removed and ``path`` is as it was.

    The temporary is ``path`` + :data:`TMP_SUFFIX`, a name a scan knows to leave alone
    (one run per output holds the output's lock); with ``unique``, a name of its own
    (``.NAME.XXXXXXXX.tmp``), for files that several processes may build at once, such as
    the model cache's.
    """
    target = Path(path)
    if unique:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = target.with_name(target.name + TMP_SUFFIX)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes, *, fsync: bool = True, unique: bool = False
) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` all at once: a reader sees the old file
    or the new one, never a part; with ``fsync``, the new one survives a power cut;
    ``unique`` as for :func:`replacing`."""
    with replacing(path, unique=unique) as tmp, tmp.open("wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
