"""The threads pool: N daemon threads, for I/O-bound tasks.

A soft time limit is delivered with `PyThreadState_SetAsyncExc`, which raises in the task's
thread at its next bytecode: it cannot interrupt a blocking C call, only what follows it.
At a hard time limit the pool reports the task failed, raises `TimeLimitExceeded` in its
thread the same way, and gives the slot to a fresh thread; the stuck thread's own outcome
is dropped whenever it ends. Once as many threads are stuck as there are slots, only a fresh
process helps, and `stop` says so. A C call that holds the GIL stops every thread, the
keeper's too: the watchdog process covers that, as in every pool.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..brokers.base import Delivery
from ..errors import SoftTimeLimitExceeded, TimeLimitExceeded
from ..worker.execution import Outcome
from .base import ExecutorFactory, Pool


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in thread `ident` at its next bytecode (None takes a pending one back)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None
    )


@contextmanager
def thread_alarm(seconds: float) -> Iterator[None]:
    """Raise `SoftTimeLimitExceeded` in the calling thread after `seconds`."""
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


class ThreadPool(Pool):
    name = "threads"

    def __init__(
        self,
        make_executor: ExecutorFactory,
        concurrency: int = 4,
        *,
        max_tasks: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        super().__init__(make_executor, concurrency, max_tasks=max_tasks, max_memory=max_memory)
        self._todo: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Delivery, Outcome]] = queue.SimpleQueue()
        self._busy = 0
        #: delivery id -> the thread running it. Whoever pops an entry reports its outcome:
        #: the thread when the task returns, or `stop` at the hard limit (pops are atomic).
        self._running: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._stuck: list[threading.Thread] = []
        for _ in range(concurrency):
            self._spawn()

    def _spawn(self) -> None:
        # Daemon threads: a cold shutdown must not wait for running tasks to return.
        thread = threading.Thread(target=self._serve, name="soloist-task", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve(self) -> None:
        executor = self.make_executor()
        executor.soft_limit = thread_alarm
        try:
            while (delivery := self._todo.get()) is not None:
                self._running[delivery.id] = threading.get_ident()
                outcome = executor.execute(delivery)
                if self._running.pop(delivery.id, None) is None:
                    return  # stopped at its hard limit: its outcome is already reported
                self._done.put((delivery, outcome))
        except TimeLimitExceeded:
            pass  # the stop landed after the task had returned
        finally:
            executor.close()

    def submit(self, delivery: Delivery) -> None:
        self._busy += 1
        self._todo.put(delivery)

    def free(self) -> int:
        return 0 if self.worn() else self.concurrency - self._busy

    def busy(self) -> bool:
        return self._busy > 0

    def collect(self, timeout: float) -> list[tuple[Delivery, Outcome]]:
        try:
            first = self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait()
        except queue.Empty:
            return []
        done = [first]
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._busy -= len(done)
        self._ended(len(done))
        return done

    def stop(self, delivery: Delivery, outcome: Outcome) -> bool:
        self._stuck = [t for t in self._stuck if t.is_alive()]
        if len(self._stuck) >= self.concurrency:
            return False
        ident = self._running.pop(delivery.id, None)
        if ident is None:
            return True  # it returned meanwhile
        (thread,) = [t for t in self._threads if t.ident == ident]
        self._threads.remove(thread)
        self._stuck.append(thread)
        _raise_in(ident, TimeLimitExceeded)
        self._spawn()
        self._done.put((delivery, outcome))
        return True

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join(timeout=1)
