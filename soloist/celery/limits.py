"""Soft time limits that raise Celery's `SoftTimeLimitExceeded`, so unchanged task code
that catches it (`except SoftTimeLimitExceeded:` from `celery.exceptions`) sees it.

The mechanics are Soloist's own (`soloist.alarms`): SIGALRM in the main thread (the solo
pool), an asynchronous exception in a pool thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded

from .. import alarms


@contextmanager
def soft_limit(seconds: float) -> Iterator[None]:
    """Raise Celery's `SoftTimeLimitExceeded` in the calling thread after `seconds`."""
    if threading.current_thread() is threading.main_thread():
        with alarms.signal_alarm(seconds, SoftTimeLimitExceeded):
            yield
    else:
        with alarms.thread_alarm(seconds, SoftTimeLimitExceeded):
            yield
