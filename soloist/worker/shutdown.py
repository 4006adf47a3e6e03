"""Warm and cold shutdown on SIGTERM/SIGINT.

The first signal is warm: the worker finishes what it runs, gives back what it prefetched,
and exits 0. The second is cold: `ColdShutdown` is raised in the main thread wherever it
is (inside the task too), the worker gives back every delivery it holds, and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..errors import WorkerInterrupt

log = logging.getLogger("soloist.worker")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DEFAULTS: dict[signal.Signals, Any] = {
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGINT: signal.default_int_handler,
    signal.SIGUSR1: signal.SIG_DFL,
}


def _reset_handlers_in_child() -> None:
    """A process forked by a task (a `multiprocessing.Pool`, say) must not inherit the
    worker's handlers: `Pool.terminate()` SIGTERMs its children and waits for them to die,
    which a child running our warm-shutdown handler never would."""
    for sig, default in _DEFAULTS.items():
        handler = signal.getsignal(sig)
        if getattr(handler, "__module__", "").startswith("soloist."):
            signal.signal(sig, default)


os.register_at_fork(after_in_child=_reset_handlers_in_child)


class ColdShutdown(WorkerInterrupt):
    """Raised in the main thread by the second shutdown signal."""


class Shutdown:
    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self.requested = False
        self.cold = False
        #: Called, in a thread of its own, when a warm shutdown is asked for: it cuts short
        #: the wait of an idle fetch (`Broker.interrupt`).
        self.wake = wake
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def request(self) -> None:
        """Ask for a warm shutdown (also what the first signal does)."""
        self.requested = True
        if self.wake is not None:
            threading.Thread(target=self.wake, name="soloist-wake", daemon=True).start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked child that still has this handler (the signal came before the
            # at-fork reset ran): die of the signal, as a child is expected to.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if not self.requested:
            self.request()
            log.warning("%s: warm shutdown, finishing the running task (again to stop now)", name)
            return
        self.cold = True
        log.warning("%s: cold shutdown, giving the running task back", name)
        raise ColdShutdown(name)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals only reach the main thread; an embedded worker relies on request()
        self._pid = os.getpid()
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
