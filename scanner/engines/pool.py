"""Worker threads that never hold a scan hostage.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one
decode stuck in C code (a huge or hostile file) keeps a finished or interrupted scan
alive as long as the decoder likes. :class:`DaemonPool` runs tasks on daemon threads
instead: a task that runs past its time is *abandoned* (its result will be dropped, a
fresh thread takes its place so the pool keeps its size), and shutting down waits a
bounded time, never on a stuck task.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: How often a waiting caller looks at the clock.
_POLL_S = 0.25


@dataclass(eq=False)
class Task(Generic[T]):
    """A submitted call: its future, when a worker started it (None while queued) and
    how long it ran (None until it ends)."""

    future: Future[T] = field(default_factory=Future)
    started: float | None = None
    ran_s: float | None = None
    abandoned: bool = False
    finished: bool = False


class DaemonPool:
    """``workers`` daemon threads running submitted calls in order.

    Args:
        workers: threads kept busy.
        name: thread name prefix.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, Task[Any]] | None]
        self._queue = queue.SimpleQueue()
        self._name = name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}")
        t.daemon = True
        with self._lock:
            self._threads.append(t)
        t.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, arg, task = job
            if not task.future.set_running_or_notify_cancel():
                continue
            task.started = time.monotonic()
            try:
                result = fn(arg)
            except BaseException as exc:  # handed to whoever waits on the task
                task.ran_s = time.monotonic() - task.started
                task.future.set_exception(exc)
            else:
                task.ran_s = time.monotonic() - task.started
                task.future.set_result(result)
            with self._lock:
                task.finished = True
                if task.abandoned:
                    return  # a replacement thread has taken this one's place

    def submit(self, fn: Callable[[Any], T], arg: Any) -> Task[T]:
        if self._closed:
            raise RuntimeError("pool is shut down")
        task: Task[T] = Task()
        self._queue.put((fn, arg, task))
        return task

    def result(self, task: Task[T], timeout_s: float, on_timeout: Callable[[], T]) -> T:
        """The task's result; if it runs longer than ``timeout_s`` once started, abandon
        it and return ``on_timeout()`` instead. Time spent queued does not count, and the
        budget is exact: a task that ended past it while nobody was looking (between two
        looks at the clock) is past its time too, whatever the waiter was doing."""
        while True:
            try:
                task.future.exception(timeout=_POLL_S)  # waits; raises only on a timeout
            except TimeoutError:
                started = task.started
                if started is not None and time.monotonic() - started > timeout_s:
                    self._abandon(task)
                    return on_timeout()
                continue
            if task.ran_s is not None and task.ran_s > timeout_s:
                return on_timeout()
            return task.future.result()

    def _abandon(self, task: Task[Any]) -> None:
        """Give up on a task; unless its thread has already finished it (and so stays in
        the pool), start another thread in its place."""
        with self._lock:
            if task.finished:
                return
            task.abandoned = True
        self._spawn()

    def shutdown(self, wait_s: float = 2.0) -> None:
        """Cancel queued tasks, let idle threads end; wait at most ``wait_s`` for the
        busy ones (daemon threads: a stuck one does not keep the process alive)."""
        self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[2].future.cancel()
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + wait_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
