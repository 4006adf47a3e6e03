"""Revoking tasks, the worker's side.

`Result.revoke()` records the task as REVOKED in the result store (a final state, so a
worker that finishes it anyway cannot overwrite it) and adds it to the store's revocation
log. Each worker's keeper thread reads the log every `SYNC_INTERVAL` seconds (and once before
the first fetch) into `Revocations`, an in-memory map: the task runner skips a revoked task
with one dict lookup, so the hot path costs no extra round trip. A revocation with
`terminate=True` also stops the task if it runs: the pool stops it where it can (a thread,
a child process); the solo pool runs it in the main thread, so `MainThreadStop` raises
`TaskTerminated` there from a SIGUSR1 handler. The log lives as long as the results do
(the app's `result_ttl`), so revocations survive a worker restart.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import TaskTerminated
from ..results.base import Revocation
from ..task import current_request

if TYPE_CHECKING:
    from ..app import App

#: How often the keeper reads the revocation log: how late a revoke reaches a busy worker.
SYNC_INTERVAL = 0.5
#: Each read starts this long before the newest entry already seen, so an entry committed
#: late (its time taken before another revoker's, its commit after) is not missed.
_OVERLAP = 5.0
#: The signal that interrupts the main thread; SIGALRM is the soft time limit's.
STOP_SIGNAL = signal.SIGUSR1


class Revocations(dict[str, Revocation]):
    """The revoked task ids a worker knows of, each with its revocation, refreshed from the
    result store. A dict itself, so that the task runner's `task_id in revoked` is the
    dict's C `__contains__` (reached through the subclass's slot: 180 instructions more
    than a plain dict's), not a Python one called from C (600 more, on every task run)."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app
        self._since = 0.0
        self._mark: bytes | None = None

    def sync(self) -> None:
        """Read the entries logged since the last read; forget those past the result ttl.

        Where the store has a mark that moves with its log, the log is read only when the
        mark moved (read first, so an entry logged meanwhile is read next time). Only the
        keeper calls it, while the main thread reads: each entry is added or removed whole."""
        mark = self.app.results.revocation_mark()
        if mark is not None and mark == self._mark:
            return
        got = self.app.results.revoked_since(self._since)
        self._mark = mark
        if not got:
            return
        self.update((r.task_id, r) for r in got)
        self._since = max(r.at for r in got) - _OVERLAP
        oldest = time.time() - self.app.result_ttl
        for task_id in [t for t, r in self.items() if r.at <= oldest]:
            del self[task_id]


class MainThreadStop:
    """Raises `TaskTerminated` inside the task running in the main thread (the solo pool)."""

    def __init__(self) -> None:
        self._target: str | None = None
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        """Take over STOP_SIGNAL; only possible from the main thread (else a no-op)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(STOP_SIGNAL, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(STOP_SIGNAL, self._previous)
            self._installed = False

    def stop(self, task_id: str) -> None:
        """Called from another thread: interrupt the main thread if it runs `task_id`."""
        if self._installed:
            self._target = task_id
            signal.pthread_kill(threading.main_thread().ident or 0, STOP_SIGNAL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        target, self._target = self._target, None
        request = current_request()
        # Raise only inside that very task: it may have ended before the signal landed.
        if target is not None and request is not None and request.id == target:
            raise TaskTerminated(f"task {target} revoked with terminate=True")
