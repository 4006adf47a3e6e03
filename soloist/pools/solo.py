"""The solo pool: the task runs inline, in the worker's main thread, with nothing between.

Its soft time limit is SIGALRM, which only the main thread can receive: the exception is
raised wherever the task is (also inside `time.sleep` and other interruptible calls). A
worker run in another thread (embedded in a program) gets it from a timer thread instead,
at the task's next bytecode after the limit (`alarms.thread_alarm`).
Processes the task left running when it returns are ended (see `tree`).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from .. import alarms
from ..brokers.base import Delivery
from ..errors import SoftTimeLimitExceeded
from ..execution import Outcome
from . import tree
from .base import Pool, RunnerFactory
from .guard import TaskGuard


def alarm(seconds: float) -> AbstractContextManager[None]:
    """Raise `SoftTimeLimitExceeded` in the task's thread after `seconds`."""
    if threading.current_thread() is threading.main_thread():
        return alarms.signal_alarm(seconds, SoftTimeLimitExceeded)
    return alarms.thread_alarm(seconds, SoftTimeLimitExceeded)


class SoloPool(Pool):
    name = "solo"

    def __init__(
        self,
        make_runner: RunnerFactory,
        concurrency: int = 1,
        *,
        max_tasks: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        super().__init__(make_runner, 1, max_tasks=max_tasks, max_memory=max_memory)
        self.runner = make_runner(alarm)
        self.guard = TaskGuard()
        self._done: list[tuple[Delivery, Outcome]] = []
        #: The thread the worker submits from, whose children a task's would be.
        self._tid = 0

    def submit(self, delivery: Delivery) -> None:
        outcome = self.guard.run(self.runner.run, delivery)
        if not self._tid:  # (a system call: once)
            self._tid = threading.get_native_id()
        if tree.left_anything(self._tid):  # the cheap check: one read of a /proc file
            tree.end_leftovers(outcome.task, tree.CHILD_GRACE, self._tid)
        self._done.append((delivery, outcome))

    def free(self) -> int:
        return 0 if self._done or self._worn else 1

    def busy(self) -> bool:
        return bool(self._done)

    def collect(self, timeout: float) -> list[tuple[Delivery, Outcome]]:
        done, self._done = self._done, []
        self._ended(len(done))
        return done

    def stop(self, delivery: Delivery, outcome: Outcome) -> bool:
        # The task runs in the worker's main thread: only ending the process stops it.
        return any(d.id == delivery.id for d, _ in self._done)

    def close(self) -> None:
        self.runner.close()
        self.guard.close()
