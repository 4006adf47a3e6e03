"""The solo pool: the task runs inline, in the worker's main thread, with nothing between.

Its soft time limit is SIGALRM, which only the main thread can receive: the exception is
raised wherever the task is (also inside `time.sleep` and other interruptible calls).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ..brokers.base import Delivery
from ..errors import SoftTimeLimitExceeded
from ..worker.execution import Outcome
from .base import ExecutorFactory, Pool


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise `SoftTimeLimitExceeded` in the main thread after `seconds`."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit of {seconds}s exceeded")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SoloPool(Pool):
    name = "solo"

    def __init__(self, make_executor: ExecutorFactory, concurrency: int = 1) -> None:
        super().__init__(make_executor, 1)
        self.executor = make_executor()
        self.executor.soft_limit = alarm
        self._done: list[tuple[Delivery, Outcome]] = []

    def submit(self, delivery: Delivery) -> None:
        self._done.append((delivery, self.executor.execute(delivery)))

    def free(self) -> int:
        return 0 if self._done else 1

    def collect(self, timeout: float) -> list[tuple[Delivery, Outcome]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        self.executor.close()
