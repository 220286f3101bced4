"""One live run per output: an ``flock`` on a lock file beside it."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from aiscan.model.errors import AiscanError

from .sidecars import sidecars


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

        self.path = sidecars(out).lock
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
