"""The threads pool: N daemon threads, for I/O-bound tasks.

A soft time limit is delivered with `PyThreadState_SetAsyncExc`, which raises in the task's
thread at its next bytecode: it cannot interrupt a blocking C call, only what follows it.
The hard limit (the keeper and watchdog) covers the rest, as in every pool.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..brokers.base import Delivery
from ..errors import SoftTimeLimitExceeded
from ..worker.execution import Outcome
from .base import ExecutorFactory, Pool


@contextmanager
def thread_alarm(seconds: float) -> Iterator[None]:
    """Raise `SoftTimeLimitExceeded` in the calling thread after `seconds`."""
    target = ctypes.c_ulong(threading.get_ident())
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(SoftTimeLimitExceeded))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if fired.is_set():  # raised too late to land inside the block: take it back
            ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)


class ThreadPool(Pool):
    name = "threads"

    def __init__(self, make_executor: ExecutorFactory, concurrency: int = 4) -> None:
        super().__init__(make_executor, concurrency)
        self._todo: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Delivery, Outcome]] = queue.SimpleQueue()
        self._busy = 0
        # Daemon threads: a cold shutdown must not wait for running tasks to return.
        self._threads = [
            threading.Thread(target=self._serve, name=f"soloist-task-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        executor = self.make_executor()
        executor.soft_limit = thread_alarm
        try:
            while (delivery := self._todo.get()) is not None:
                self._done.put((delivery, executor.execute(delivery)))
        finally:
            executor.close()

    def submit(self, delivery: Delivery) -> None:
        self._busy += 1
        self._todo.put(delivery)

    def free(self) -> int:
        return self.concurrency - self._busy

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
        return done

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join(timeout=1)
