"""The walk of a scan's tree, once, in a thread ahead of it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.discovery import Found

_END = object()


class Walk(threading.Thread):
    """Walks the files of a scan once, ahead of it, in a background thread.

    The files go into a bounded queue (``ahead`` of them at most, so memory stays flat
    on any tree) and come out, in the walk's order, by iterating; ``found`` counts them
    as they are found and ``total`` is set when the walk ends, which on a tree of up to
    ``ahead`` files is almost at once: that is the progress bar's total and ETA, without
    walking the tree a second time. An exception of the walk (a state database error)
    is raised by the iteration.
    """

    def __init__(self, files: Iterable[Found], ahead: int = 100_000) -> None:
        super().__init__(name="aiscan-walk", daemon=True)
        self._files = files
        self._queue: queue.Queue[Any] = queue.Queue(ahead)
        self._halt = threading.Event()
        self._error: BaseException | None = None
        self.found = 0
        self.total: int | None = None

    def run(self) -> None:
        try:
            for f in self._files:
                if not self._put(f):
                    return
                self.found += 1
            self.total = self.found
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        self._put(_END)

    def _put(self, value: object) -> bool:
        while not self._halt.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Found]:
        while (f := self._queue.get()) is not _END:
            yield f
        if self._error is not None:
            raise self._error

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop walking and wait (at most ``wait_s``) for the thread to end: it may be
        reading the state database, which the caller is about to close."""
        self._halt.set()
        if self.is_alive():
            self.join(wait_s)
