"""Waiting for a condition in tests: poll with a deadline, never a bare sleep.

A sleep long enough for a slow, shared machine is far too long on a fast one, and still
flaky on a loaded one; a poll returns as soon as the condition holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, what: str = "", interval: float = 0.02
) -> T:
    """Call `predicate` until it returns something true, and return that; fail the test,
    naming `what`, if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def asleep(pid: int, tid: int | None = None) -> bool:
    """Whether process `pid` (or its thread `tid`) sleeps in the kernel now, in poll(), a
    timed sleep or a lock's wait, as an idle fetch does between looks (Linux's /proc wchan:
    the kernel function it waits in)."""
    path = f"/proc/{pid}/task/{tid}/wchan" if tid is not None else f"/proc/{pid}/wchan"
    try:
        return any(word in Path(path).read_text() for word in ("poll", "nanosleep", "futex"))
    except OSError:  # gone, or no such thread yet
        return False
