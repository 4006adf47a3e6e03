"""Soft time limits that raise Celery's `SoftTimeLimitExceeded`, so unchanged task code
that catches it (`except SoftTimeLimitExceeded:` from `celery.exceptions`) sees it.

In the main thread (the solo pool) it is SIGALRM, as in Soloist's solo pool; in a pool
thread, an asynchronous exception raised at the thread's next bytecode, as in Soloist's
threads pool.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from celery.exceptions import SoftTimeLimitExceeded


@contextmanager
def soft_limit(seconds: float) -> Iterator[None]:
    """Raise Celery's `SoftTimeLimitExceeded` in the calling thread after `seconds`."""
    if threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            yield
    else:
        with _thread_alarm(seconds):
            yield


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds}s) exceeded")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None
    )


@contextmanager
def _thread_alarm(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        _raise_in(target, SoftTimeLimitExceeded)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if fired.is_set():  # raised too late to land inside the block: take it back
            _raise_in(target, None)
