"""The decode pool's time budget: exact, whoever waits and however long."""

from __future__ import annotations

import threading
import time

import pytest

from aiscan.scanner.engines.pool import DaemonPool


def test_a_task_past_its_budget_is_timed_out_even_when_it_ended_between_two_looks() -> None:
    """50 ms of work against a 10 ms budget ends before the waiter's first look at the
    clock (it looks every 250 ms): still past its time, not a result."""
    pool = DaemonPool(1, "t")
    try:
        task = pool.submit(lambda s: time.sleep(s) or "done", 0.05)
        assert pool.result(task, 0.01, lambda: "late") == "late"
        quick = pool.submit(lambda x: x * 2, 21)
        assert pool.result(quick, 1.0, lambda: -1) == 42
    finally:
        pool.shutdown()


def test_time_in_the_queue_does_not_count_and_a_stuck_task_is_abandoned() -> None:
    """One worker: the second task waits behind a stuck one, which is abandoned at its
    budget; a fresh thread then runs the second, whose own time is short."""
    pool = DaemonPool(1, "t")
    release = threading.Event()
    try:
        stuck = pool.submit(lambda e: e.wait(30), release)
        queued = pool.submit(lambda x: x + 1, 1)
        assert pool.result(stuck, 0.3, lambda: "abandoned") == "abandoned"
        assert pool.result(queued, 0.3, lambda: -1) == 2
    finally:
        release.set()
        pool.shutdown()


def test_a_failing_task_raises_its_own_error_within_budget() -> None:
    pool = DaemonPool(1, "t")

    def boom(_: object) -> None:
        raise ValueError("bad file")

    try:
        task = pool.submit(boom, None)
        with pytest.raises(ValueError, match="bad file"):
            pool.result(task, 1.0, lambda: None)
    finally:
        pool.shutdown()
