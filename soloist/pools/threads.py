"""The threads pool: N daemon threads, for I/O-bound tasks.

A soft time limit is delivered with `PyThreadState_SetAsyncExc`, which raises in the task's
thread at its next bytecode: it cannot interrupt a blocking C call, only what follows it.
At a hard time limit the pool reports the task failed, raises `TimeLimitExceeded` in its
thread the same way, and gives the slot to a fresh thread; the stuck thread's own outcome
is dropped whenever it ends. Once as many threads are stuck as there are slots, only a fresh
process helps, and `stop` says so. A C call that holds the GIL stops every thread, the
keeper's too: the watchdog process covers that, as in every pool.

Each thread has an inbox, and `submit` records which thread a delivery goes to before the
thread sees it: whatever ends a thread (nothing a task raises does; the guard turns it into
an outcome), its delivery is reported lost and a fresh thread takes its place.

The processes a task starts are its thread's children (see `tree`): those left running
when it returns, or when it is stopped, are ended. Orphans (their parent died first) are
re-parented to the worker's main thread, which runs no task, and processes forked by
multiprocessing's forkserver are the forkserver's children: those are ended after a task
returns while no other task runs, or when the worker stops.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from .. import alarms
from ..brokers.base import Delivery
from ..errors import SoftTimeLimitExceeded, TimeLimitExceeded
from ..execution import Kind, Outcome
from . import tree
from .base import Pool, RunnerFactory
from .guard import TaskGuard

log = logging.getLogger("soloist.worker")


def thread_alarm(seconds: float) -> AbstractContextManager[None]:
    """Raise `SoftTimeLimitExceeded` in the calling thread after `seconds`."""
    return alarms.thread_alarm(seconds, SoftTimeLimitExceeded)


class _Slot:
    """One task thread, its inbox, and the delivery it was last handed."""

    def __init__(self, serve: Callable[[_Slot], None]) -> None:
        self.inbox: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self.delivery: Delivery | None = None
        # Daemon threads: a cold shutdown must not wait for running tasks to return.
        self.thread = threading.Thread(target=serve, args=(self,), name="soloist-task", daemon=True)


class ThreadPool(Pool):
    name = "threads"

    def __init__(
        self,
        make_runner: RunnerFactory,
        concurrency: int = 4,
        *,
        max_tasks: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        super().__init__(make_runner, concurrency, max_tasks=max_tasks, max_memory=max_memory)
        self._done: queue.SimpleQueue[tuple[Delivery, Outcome]] = queue.SimpleQueue()
        self._busy = 0
        #: delivery id -> the slot running it, entered by `submit` before the thread sees
        #: the delivery. Whoever pops an entry reports its outcome: the thread when the
        #: task returns, `stop` at the hard limit, `_thread_ended` if the thread dies.
        self._running: dict[str, _Slot] = {}
        self._slots: list[_Slot] = []  # live, not stuck past a hard limit
        self._idle: collections.deque[_Slot] = collections.deque()
        self._stuck: list[threading.Thread] = []
        self._lock = threading.Lock()  # _slots and _idle, against a thread that dies
        self._closing = False
        self._guard = TaskGuard(signals=False)
        self._main = threading.main_thread().native_id or 0
        for _ in range(concurrency):
            self._spawn()

    def _spawn(self) -> None:
        slot = _Slot(self._serve)
        with self._lock:
            self._slots.append(slot)
            self._idle.append(slot)
        slot.thread.start()

    def _serve(self, slot: _Slot) -> None:
        """One thread's life. Nothing a task does ends it: the guard turns what escapes
        the runner into an outcome. Should it end anyway, `_thread_ended` makes good."""
        runner = self.make_runner(thread_alarm)
        tid = threading.get_native_id()
        try:
            while (delivery := slot.inbox.get()) is not None:
                outcome = self._guard.run(runner.run, delivery)
                if self._running.pop(delivery.id, None) is None:
                    return  # stopped at its hard limit: its outcome is already reported
                if tree.left_anything(tid, self._main):
                    # Orphans land on the main thread, and the forkserver serves every
                    # task: what is there is this task's only if no other one runs.
                    alone = not self._running
                    tids = (tid, self._main) if alone else (tid,)
                    tree.end_leftovers(outcome.task, tree.CHILD_GRACE, *tids, alone=alone)
                self._idle.append(slot)
                self._done.put((delivery, outcome))
        except TimeLimitExceeded:
            pass  # the stop landed after the task had returned
        finally:
            self._thread_ended(slot)
            runner.close()

    def _thread_ended(self, slot: _Slot) -> None:
        """A thread ends: on close, or stopped at a hard limit (already replaced), or else
        by something nothing caught: then its delivery is reported lost, and a fresh
        thread takes its place."""
        with self._lock:
            if self._closing or slot not in self._slots:
                return
            self._slots.remove(slot)
            if slot in self._idle:
                self._idle.remove(slot)
        held = slot.delivery
        mine = held is not None and self._running.get(held.id) is slot
        if held is not None and mine and self._running.pop(held.id, None) is not None:
            self._done.put((held, Outcome(Kind.LOST, reason="the thread running it died")))
        log.error("a task thread ended unexpectedly; starting another")
        self._spawn()

    def submit(self, delivery: Delivery) -> None:
        self._busy += 1
        with self._lock:
            slot = self._idle.popleft()
            slot.delivery = delivery
            self._running[delivery.id] = slot
        slot.inbox.put(delivery)

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
        slot = self._running.pop(delivery.id, None)
        if slot is None:
            return True  # it returned meanwhile
        with self._lock:
            self._slots.remove(slot)
        self._stuck.append(slot.thread)
        alarms.raise_in(slot.thread.ident or 0, TimeLimitExceeded)
        alone = not self._running
        tid = slot.thread.native_id or 0
        tids = (tid, self._main) if alone else (tid,)
        tree.end_in_background(tree.leftovers(*tids, alone=alone), tree.CHILD_GRACE)
        self._spawn()
        self._done.put((delivery, outcome))
        return True

    def close(self) -> None:
        with self._lock:
            self._closing = True
            slots = list(self._slots)
        for slot in slots:
            slot.inbox.put(None)
        for slot in slots:
            slot.thread.join(timeout=1)
        self._guard.close()
