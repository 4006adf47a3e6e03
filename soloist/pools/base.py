"""The pool contract: the seam between the worker loop and how a task is executed.

The worker hands a pool deliveries while it has free slots and collects finished
outcomes; it never knows whether a task ran inline, on a thread or in a child process.
The worker settles every outcome itself, in its main thread.
"""

from __future__ import annotations

import abc
import logging
import os
import resource
import sys
from collections.abc import Callable

from ..brokers.base import Delivery
from ..execution import Outcome, SoftLimit, TaskRunner
from . import tree

#: Builds the runner a pool runs deliveries with (one per thread or child), given the pool's
#: way of raising a soft time limit inside a task.
RunnerFactory = Callable[[SoftLimit], TaskRunner]

log = logging.getLogger("soloist.worker")


class Pool(abc.ABC):
    name: str = ""
    #: Whether tasks run in the worker's own process (so it recycles itself, see `worn`).
    in_process: bool = True

    def __init__(
        self,
        make_runner: RunnerFactory,
        concurrency: int = 1,
        *,
        max_tasks: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        self.make_runner = make_runner
        self.concurrency = concurrency
        #: Recycling: a process that ran this many tasks, or grew past this many MB, is
        #: replaced by a fresh one (a memory leak in task code then cannot grow forever).
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        #: The memory limit counts what tasks start too (see `tree.PeakMemory`).
        self.memory = tree.PeakMemory(rss_mb) if max_memory and self.in_process else None
        self.completed = 0
        self._worn = False

    @abc.abstractmethod
    def submit(self, delivery: Delivery) -> None:
        """Start running `delivery`; only called while `free()` is above zero."""

    @abc.abstractmethod
    def free(self) -> int:
        """How many more deliveries can be submitted now."""

    @abc.abstractmethod
    def collect(self, timeout: float) -> list[tuple[Delivery, Outcome]]:
        """Finished deliveries and their outcomes, waiting up to `timeout` for the first."""

    def stop(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Stop the running `delivery` now and report `outcome` for it through `collect`.

        Called from the keeper thread at a hard time limit. True if the task is stopped
        (or had already finished, in which case nothing changes); False if this pool can
        only stop it by ending the worker process, which the caller then does.
        """
        return False

    def worn(self) -> bool:
        """True once the worker's own process ran its `max_tasks` or grew past `max_memory`:
        a worn pool has no free slot, and the worker finishes what runs and exits for a
        fresh process to take over. Pools that run tasks in child processes recycle those
        instead and never wear."""
        return self._worn

    def _ended(self, count: int) -> None:
        """Pools that run tasks in the worker's own process count finished tasks here."""
        if not count or self._worn:
            return
        self.completed += count
        tasks = bool(self.max_tasks and self.completed >= self.max_tasks)
        memory = self.memory.take() if self.memory is not None else 0.0
        self._worn = tasks or bool(self.max_memory and memory >= self.max_memory)
        if self._worn:
            log.info(
                "recycling this worker after %d tasks at %.0f MB (with what its tasks "
                "started): it finishes and exits",
                self.completed,
                memory or rss_mb(),
            )

    @abc.abstractmethod
    def busy(self) -> bool:
        """Whether submitted deliveries are still to be collected."""

    def drain(self) -> None:
        """The worker is stopping warm: a task still waiting for CPUs gives its delivery
        back instead of starting. (In-process pools see the worker's own flag.)"""

    def close(self) -> None:
        """Wait for running tasks to end and release resources."""


def rss_mb() -> float:
    """This process's resident memory in MB (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
