"""How an idle SQLite fetch waits for another process's commit without spinning.

A commit in WAL mode writes its frames to the `-wal` file beside the database. On Linux
an inotify watch on that file wakes the waiter on that write, so an idle worker sleeps in
the kernel until something is written (a message, or a settle or a result: the caller
tells them apart by reading). Elsewhere (macOS, no inotify_simple), and where inotify
cannot be had (out of watches or instances), the waiter polls `PRAGMA data_version` every
few milliseconds instead.

The write precedes the commit's publication in shared memory by a few microseconds (and
a big transaction writes frames long before it commits), so a wake-up that finds nothing
committed yet polls briefly before sleeping again. Writes from before a wait began are
dropped unread (the caller read the file after them); should one of them be a commit not
yet published then (its writer stalled between the two steps), the sleep's CEILING bounds
how late it is seen.

A commit wakes every waiter on the file at once: each reads, and those that find a
message due race for it with the claim (SQLite's write lock decides).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

try:  # Linux only; a dependency there (pyproject), absent elsewhere
    import inotify_simple
except ImportError:  # pragma: no cover - not Linux
    inotify_simple = None

#: Polling (no inotify, and after a write not yet committed): the first and longest sleep,
#: backing off from the first once nothing has been claimed for BUSY_SPELL seconds.
POLL_MIN, POLL_MAX = 0.001, 0.01
BUSY_SPELL = 1.0
#: The longest an inotify wait sleeps without looking (a missed event costs at most this).
CEILING = 1.0
#: How long a write with no commit seen yet is followed by polling before sleeping again.
SETTLE = 0.1
#: Its first sleep: the writer publishes its commit microseconds after the write.
SETTLE_FIRST = 0.0001


class CommitWait:
    """Waits for a commit to one SQLite file (its `PRAGMA data_version` moving on from the
    one the caller saw), or for an `interrupt` from another thread."""

    def __init__(self, path: str) -> None:
        self._dir = os.path.dirname(os.path.abspath(path))
        self._wal = os.path.basename(path) + "-wal"
        self._watch: Any = None
        self._watching = False  # the -wal file is watched (not while it is gone)
        self._poller: select.poll | None = None
        self._pipe = (-1, -1)  # written by interrupt to end a poll() on the watch
        self._pid = 0
        self._closer: Callable[[], object] = lambda: None
        self._interrupted = threading.Event()
        self.claimed_at = 0.0  # monotonic time of the caller's last fetch that got something

    def _inotify(self) -> Any:
        """This process's inotify instance, or None where none can be had."""
        if self._pid == os.getpid():
            return self._watch
        # A watch (and its pipe) must not cross a fork: the child closes its copies of the
        # parent's and makes its own.
        self._closer()
        self._watch = self._poller = None
        self._watching = False
        self._pid = os.getpid()
        if inotify_simple is None:
            return None
        try:
            watch = inotify_simple.INotify()
        except OSError:  # out of inotify instances: poll
            return None
        self._pipe = os.pipe()
        for fd in self._pipe:  # interrupted() reads it whether or not interrupt wrote
            os.set_blocking(fd, False)
        self._poller = select.poll()
        self._poller.register(watch.fileno(), select.POLLIN)
        self._poller.register(self._pipe[0], select.POLLIN)
        self._watch = watch
        # Closed with the broker, or when it is dropped unclosed.
        self._closer = weakref.finalize(self, _close, watch, self._pipe)
        return watch

    def interrupt(self) -> None:
        """End the wait under way, or else the next one (from any thread)."""
        self._interrupted.set()
        if self._watch is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):  # full (already woken) or closed
                os.write(self._pipe[1], b"x")

    @property
    def interrupting(self) -> bool:
        """Whether an `interrupt` waits to be answered (`interrupted` answers it)."""
        return self._interrupted.is_set()

    def interrupted(self) -> bool:
        """Whether an `interrupt` came that no wait has answered yet (then it is used up)."""
        if not self._interrupted.is_set():
            return False
        self._interrupted.clear()
        if self._watch is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.read(self._pipe[0], 4096)
        return True

    def wait(self, version: Callable[[], int], seen: int, until: float) -> None:
        """Return once `version()` is not `seen`, at monotonic time `until`, or on an
        `interrupt`."""

        def changed() -> bool:
            return version() != seen

        watch = self._inotify()
        if watch is not None and not self._watching:
            try:  # the file, not its directory: heartbeats and logs beside it wake nobody
                watch.add_watch(os.path.join(self._dir, self._wal), inotify_simple.flags.MODIFY)
                self._watching = True
            except OSError:  # no -wal file (yet): poll this time
                pass
        if watch is None or self._poller is None or not self._watching:
            self._poll(changed, until, BUSY_SPELL)
            return
        watch.read(timeout=0)  # writes before now: the caller has read what they committed
        while not changed() and not self._interrupted.is_set():
            now = time.monotonic()
            if now >= until:
                return
            self._poller.poll(min(until - now, CEILING) * 1000 + 1)
            events = watch.read(timeout=0)
            if any(e.mask & inotify_simple.flags.IGNORED for e in events):
                self._watching = False  # the file was removed: watch it anew next time
                return
            if events:
                self._poll(changed, min(until, time.monotonic() + SETTLE), 0, SETTLE_FIRST)

    def _poll(
        self, changed: Callable[[], bool], until: float, spell: float, poll: float = POLL_MIN
    ) -> None:
        while not changed() and time.monotonic() < until:
            if self._interrupted.wait(poll):
                return
            if time.monotonic() - self.claimed_at > spell:
                poll = min(poll * 2, POLL_MAX)

    def close(self) -> None:
        self._closer()
        self._watch = self._poller = None
        self._pid = 0


def _close(watch: Any, pipe: tuple[int, int]) -> None:
    watch.close()
    os.close(pipe[0])
    os.close(pipe[1])
