"""Raising an exception in a running thread after a time, the mechanics of soft time
limits: SIGALRM in the main thread (raised wherever the code is, also inside `time.sleep`
and other interruptible calls), `PyThreadState_SetAsyncExc` in any other (raised at the
thread's next bytecode: it cannot interrupt a blocking C call, only what follows it).

The exception is the caller's: Soloist's pools raise Soloist's `SoftTimeLimitExceeded`,
the Celery bridge Celery's.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def raise_in(ident: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in thread `ident` at its next bytecode (None takes a pending one back)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None
    )


@contextmanager
def signal_alarm(seconds: float, error: type[BaseException]) -> Iterator[None]:
    """Raise `error` in the main thread after `seconds` (SIGALRM)."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise error(f"soft time limit of {seconds}s exceeded")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def thread_alarm(seconds: float, error: type[BaseException]) -> Iterator[None]:
    """Raise `error` in the calling thread after `seconds` (from a timer thread)."""
    target = threading.get_ident()
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        raise_in(target, error)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if fired.is_set():  # raised too late to land inside the block: take it back
            raise_in(target, None)
