"""The pool contract: the seam between the worker loop and how a task is executed.

The worker hands a pool deliveries while it has free slots and collects finished
outcomes; it never knows whether a task ran inline, on a thread or in a child process.
The worker settles every outcome itself, in its main thread.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from ..brokers.base import Delivery
from ..worker.execution import Executor, Outcome

#: Builds the executor a pool runs deliveries with (one per thread or child).
ExecutorFactory = Callable[[], Executor]


class Pool(abc.ABC):
    name: str = ""

    def __init__(self, make_executor: ExecutorFactory, concurrency: int = 1) -> None:
        self.make_executor = make_executor
        self.concurrency = concurrency

    @abc.abstractmethod
    def submit(self, delivery: Delivery) -> None:
        """Start running `delivery`; only called while `free()` is above zero."""

    @abc.abstractmethod
    def free(self) -> int:
        """How many more deliveries can be submitted now."""

    @abc.abstractmethod
    def collect(self, timeout: float) -> list[tuple[Delivery, Outcome]]:
        """Finished deliveries and their outcomes, waiting up to `timeout` for the first."""

    def busy(self) -> bool:
        return self.free() < self.concurrency

    def close(self) -> None:
        """Wait for running tasks to end and release resources."""
