"""What a task may do to the process that runs it, undone after each task.

Task code runs in the worker's own process (or a pool child), so it can reach past its
task: replace the worker's SIGTERM or SIGINT handler (then a shutdown signal no longer
reaches the worker), its SIGALRM or SIGUSR1 handler (soft time limits, terminating
revokes), leave a timer armed (its SIGALRM lands in a later task), or fork and return in
the child (which would go on as a second worker on the parent's broker connection). A
`TaskGuard` runs each task of a pool and, after it:

* ends a forked child at once with `os._exit`, before it touches the broker (0 if the
  task succeeded, else 1; its own code if it called `sys.exit`);
* puts back any of those handlers the task replaced, and disarms the timer if the task
  had its own SIGALRM handler (a timer armed without one reaches `_stray_alarm`, which
  the guard installs so that such a SIGALRM cannot kill the worker);
* turns anything that escapes the task runner (which records what the task raised) into a
  `LOST` outcome, so a thread or child survives it and the delivery is given back.

The worker's handlers are the ones in place when the first task runs (the worker installs
them all before it fetches). Only the main thread may set handlers: a worker run in another
thread (embedded in a program, or in a test) leaves them alone. Cost per task: the four
handlers read after it (Python's own table, no system call) and compared, and an integer
compare: about 0.25 µs; a system call only when something changed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..brokers.base import Delivery
from ..errors import WorkerInterrupt
from ..execution import Kind, Outcome, describe

log = logging.getLogger("soloist.worker")

# The C function: `signal.getsignal` wraps it in an enum conversion costing ten times more,
# which on every task is a few percent of a no-op task's run.
_getsignal: Callable[[int], Any] = signal._signal.getsignal  # type: ignore[attr-defined]

#: The signals whose handlers belong to the worker (shutdown, soft limit, revoke).
WATCHED = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGUSR1)
_TERM, _INT, _ALRM, _USR1 = (int(s) for s in WATCHED)


def _handlers() -> tuple[Any, ...]:
    """The handlers of WATCHED now (unrolled: a loop would double the cost)."""
    return (_getsignal(_TERM), _getsignal(_INT), _getsignal(_ALRM), _getsignal(_USR1))


#: Forks of this process so far, seen from a child (raised in each child at fork).
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1
    if signal.getsignal(signal.SIGALRM) is _stray_alarm:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a forked child's alarms are its own


os.register_at_fork(after_in_child=_forked)


def _stray_alarm(signum: int, frame: FrameType | None) -> None:
    log.warning("ignored a SIGALRM that no running task expected (a timer a task left armed)")


class TaskGuard:
    """Runs tasks for one pool; `signals` is False where tasks run on other threads than
    the main one (they cannot replace handlers, which only the main thread sets)."""

    def __init__(self, signals: bool = True) -> None:
        main = threading.current_thread() is threading.main_thread()
        self.signals = signals
        self._forks = _forks
        #: The worker's handlers of WATCHED, read when the first task runs.
        self._handlers: tuple[Any, ...] | None = None
        self._stray = main and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
        if self._stray:
            signal.signal(signal.SIGALRM, _stray_alarm)

    def run(self, execute: Callable[[Delivery], Outcome], delivery: Delivery) -> Outcome:
        if self.signals and self._handlers is None:
            if threading.current_thread() is threading.main_thread():
                self._handlers = _handlers()
            else:  # tasks run where no handler can be put back
                self.signals = False
        try:
            outcome = execute(delivery)
        except WorkerInterrupt:
            raise
        except BaseException as exc:
            if isinstance(exc, SystemExit) and _forks != self._forks:
                _exit(exc)  # a child the task forked ends itself, with its own exit code
            log.exception("delivery %s could not be run; giving it back", delivery.id)
            outcome = Outcome(Kind.LOST, reason=f"the worker could not run it: {describe(exc)}")
        if _forks != self._forks:
            _leave(outcome)
        if self._handlers is not None and (now := _handlers()) != self._handlers:
            _restore(self._handlers, now, outcome)
        return outcome

    def close(self) -> None:
        """Give SIGALRM its default handler back (from the main thread: elsewhere
        `_stray_alarm` stays, and a stray SIGALRM is still ignored)."""
        main = threading.current_thread() is threading.main_thread()
        if main and self._stray and signal.getsignal(signal.SIGALRM) is _stray_alarm:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        self._stray = False


def _restore(before: tuple[Any, ...], after: tuple[Any, ...], outcome: Outcome) -> None:
    for sig, was, now in zip(WATCHED, before, after, strict=True):
        if now == was or was is None:  # None: not set from Python; nothing to put back
            continue
        signal.signal(sig, was)
        if sig == signal.SIGALRM:
            signal.setitimer(signal.ITIMER_REAL, 0)  # whatever timer the task armed for it
        log.warning(
            "task %s[%s] replaced the worker's %s handler; restored",
            outcome.task or "?",
            outcome.task_id,
            sig.name,
        )


def _exit(exc: SystemExit) -> None:
    """End this process as an uncaught SystemExit would, without unwinding the worker."""
    code = exc.code
    if code is not None and not isinstance(code, int):
        os.write(2, f"{code}\n".encode())
        code = 1
    os._exit(code or 0)


def _leave(outcome: Outcome) -> None:
    """In a child the task forked, back from the task: exit now, never as a worker."""
    try:
        os.write(
            2,
            f"soloist: a process forked by task {outcome.task or '?'}[{outcome.task_id}] "
            f"returned into the worker; it exits\n".encode(),
        )
    finally:
        os._exit(0 if outcome.kind is Kind.SUCCESS else 1)
