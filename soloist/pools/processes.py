"""The processes pool: N child processes, each running one task at a time in its main thread.

The children are not daemonic, so a task may start processes of its own
(`ProcessPoolExecutor`, `multiprocessing.Pool`) as it may under the solo pool. They are
forked by a forkserver: a single-threaded process started once, with the app imported.
A plain fork of the worker would copy its keeper thread's locks and its open broker
connections into each child; spawn would pay a fresh interpreter and the app's imports every
time a child is replaced. Where there is no forkserver, spawn it is.

Each child imports the app by its module path, runs deliveries with its own `TaskRunner`, and
sends back a "started" notice with the message it decoded (so the keeper, time limits and
heartbeats see what runs, without the worker decoding it again), then the outcome; a
listener thread in the worker reads them. A child that dies mid-task is
replaced and its delivery reported `LOST`: the worker ends its lease, so it is redelivered
with its delivery count raised. At a hard time limit `stop` kills the child and ends what
its task started (see `tree`), and reports the failure. A child retires after `max_tasks`
tasks or past `max_memory` MB (its task's processes counted), and a fresh one takes its
place.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

from ..adapters import as_app
from ..brokers.base import Delivery
from ..errors import ConfigurationError
from ..execution import CpuGate, Kind, Outcome, TaskRunner
from ..message import Message
from . import tree
from .base import Pool, RunnerFactory, rss_mb
from .guard import TaskGuard
from .solo import alarm

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("soloist.worker")

_MAIN = {"__main__", "__mp_main__"}  # a child cannot import these by name
#: At close, how long an idle child may take to exit before it is killed.
_EXIT_WAIT = 5.0


@dataclass(frozen=True)
class ChildSpec:
    """What a child needs to build its own app, and when it retires."""

    app: str  # module:attribute
    #: Every module that defined one of the app's tasks, so the child has them all.
    modules: tuple[str, ...]
    broker_url: str
    result_url: str
    max_tasks: int | None
    max_memory: float | None
    soft_time_limit: float | None
    #: The worker's CPU budget (see soloist.worker.cpus), which the child waits on itself.
    cpus: CpuGate | None


def serve(spec: ChildSpec, tasks: Connection, results: Connection, draining: Event) -> None:
    """A child's life: run deliveries until told to stop, or until it has done its share."""
    # Its own process group: `stop` kills what the task started too, and a terminal's
    # Ctrl-C reaches only the worker, which then shuts down warm.
    os.setpgrp()
    tree.claim()  # what a task starts is its own, and stays in this child's tree
    threading.Thread(target=_die_with_worker, daemon=True).start()
    memory = tree.PeakMemory(rss_mb) if spec.max_memory else None
    for name in spec.modules:
        importlib.import_module(name)
    module, _, attr = spec.app.partition(":")
    app = as_app(getattr(importlib.import_module(module), attr))
    assert app is not None, f"{spec.app} is not an app"  # the worker loaded it as one
    app.configure(spec.broker_url, spec.result_url)
    factory: Callable[..., TaskRunner] = app.runner_factory or TaskRunner
    runner = factory(
        app,
        soft_limit=alarm,
        # The Started record: what began, so the worker need not decode it again.
        started=lambda d, m, t: results.send(("started", d.id, m)),
        default_soft_time_limit=spec.soft_time_limit,
    )
    runner.cpus = spec.cpus
    if spec.cpus is not None:
        spec.cpus.stopping = draining.is_set  # the worker is stopping warm: see `drain`
    guard = TaskGuard()
    ran = 0
    try:
        while (delivery := tasks.recv()) is not None:
            outcome = guard.run(runner.run, delivery)
            tid = threading.get_native_id()
            if tree.left_anything(tid):
                tree.end_leftovers(outcome.task, tree.CHILD_GRACE, tid)
            ran += 1
            retire = bool(spec.max_tasks and ran >= spec.max_tasks) or bool(
                memory is not None and spec.max_memory and memory.take() >= spec.max_memory
            )
            results.send(("done", delivery.id, outcome, retire))
            if retire:
                return
    except EOFError:
        pass  # the worker is gone
    finally:
        runner.close()
        app.close()


def _die_with_worker() -> None:
    """Once the worker is gone (even SIGKILLed), end what the task started and kill this
    child, rather than finish a task that another worker will be given."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        tree.end(tree.leftovers(), tree.CHILD_GRACE)
        os.killpg(0, signal.SIGKILL)


class Child:
    """One child process, the pipes to it, and the delivery it runs."""

    def __init__(self, ctx: BaseContext, spec: ChildSpec, draining: Event) -> None:
        tasks_r, self.tasks = ctx.Pipe(duplex=False)
        self.results, results_w = ctx.Pipe(duplex=False)
        self.process = ctx.Process(  # type: ignore[attr-defined]
            target=serve,
            args=(spec, tasks_r, results_w, draining),
            name="soloist-child",
            daemon=False,
        )
        self.process.start()
        tasks_r.close()
        results_w.close()  # so that this end reads EOF once the child is gone
        self.delivery: Delivery | None = None
        self.verdict: Outcome | None = None  # what to report if it dies: set by `stop`
        self.retiring = False
        self.eof = False

    @property
    def idle(self) -> bool:
        return self.delivery is None and not self.retiring

    def kill(self) -> None:
        """Kill the child at once, and end whatever its task started (SIGTERM, then
        SIGKILL after the grace) on a thread of its own."""
        procs = tree.descendants(tree.children(self.process.pid))
        if not procs:  # none, or no /proc to find them in: its process group, at once
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.kill()
        tree.end_in_background(procs, tree.CHILD_GRACE)

    def close(self) -> None:
        self.process.join()
        self.tasks.close()
        self.results.close()
        self.process.close()


class ProcessPool(Pool):
    name = "processes"
    in_process = False

    def __init__(
        self,
        make_runner: RunnerFactory,
        concurrency: int = 2,
        *,
        max_tasks: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        super().__init__(make_runner, concurrency, max_tasks=max_tasks, max_memory=max_memory)
        # Not run here: it holds the worker's `started` callback, for the children's notices.
        self._local = make_runner(alarm)
        app = self._local.app
        if not app.broker_url or app.broker_url.startswith("memory"):
            raise ConfigurationError(
                "the processes pool needs a broker its children can reach, not memory://"
            )
        modules = tuple(sorted({t.fn.__module__ for t in app.tasks.values()} - _MAIN))
        self._spec = ChildSpec(
            app_path(app),
            modules,
            app.broker_url,
            app.result_url or "",
            max_tasks,
            max_memory,
            self._local.default_soft_time_limit,
            self._local.cpus,
        )
        self._ctx = _context([*modules, self._spec.app.partition(":")[0]])
        self._lock = threading.Lock()
        self._done: queue.SimpleQueue[tuple[Delivery, Outcome]] = queue.SimpleQueue()
        self._pending = 0  # submitted and not yet collected
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._draining = self._ctx.Event()
        self._children = [Child(self._ctx, self._spec, self._draining) for _ in range(concurrency)]
        self._listener = threading.Thread(target=self._listen, name="soloist-children")
        self._listener.start()

    def submit(self, delivery: Delivery) -> None:
        self._pending += 1
        with self._lock:
            child = next(c for c in self._children if c.idle)
            child.delivery = delivery
        with contextlib.suppress(OSError):  # it died: the listener reports the delivery
            child.tasks.send(delivery._replace(receipt=None))

    def free(self) -> int:
        with self._lock:
            return sum(c.idle for c in self._children)

    def busy(self) -> bool:
        return self._pending > 0

    def drain(self) -> None:
        self._draining.set()

    def collect(self, timeout: float) -> list[tuple[Delivery, Outcome]]:
        done = []
        try:
            done.append(self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait())
            while True:
                done.append(self._done.get_nowait())
        except queue.Empty:
            self._pending -= len(done)
            return done

    def stop(self, delivery: Delivery, outcome: Outcome) -> bool:
        with self._lock:
            for child in self._children:
                if child.delivery is not None and child.delivery.id == delivery.id:
                    child.verdict = outcome
                    child.kill()
        return True

    def close(self) -> None:
        self._wake_w.send(None)
        self._listener.join()
        for child in self._children:
            if child.delivery is None:
                with contextlib.suppress(OSError):
                    child.tasks.send(None)
            else:
                child.kill()  # still running: a cold shutdown gave its delivery back
        for child in self._children:
            child.process.join(_EXIT_WAIT)
            if child.process.is_alive():
                child.kill()
            child.close()
        self._local.close()

    def _listen(self) -> None:
        """Read what the children send, and replace those that end."""
        while True:
            with self._lock:
                watched: dict[Any, Child] = {c.process.sentinel: c for c in self._children}
                watched.update({c.results: c for c in self._children if not c.eof})
            ready = wait([self._wake_r, *watched])
            if self._wake_r in ready:
                return  # closing
            # Messages first: a child's last outcome may be in the pipe when it ends.
            for obj in sorted(ready, key=lambda o: isinstance(o, int)):
                child = watched[obj]
                if obj is child.results:
                    self._read(child)
                elif child in self._children:
                    self._reap(child)

    def _read(self, child: Child) -> None:
        try:
            message = child.results.recv()
        except (EOFError, OSError):
            child.eof = True  # it is ending: its sentinel says when
            return
        if message[0] == "started":
            if child.delivery is not None and child.delivery.id == message[1]:
                self._announce(child.delivery, message[2])
            return
        _, delivery_id, outcome, retiring = message
        with self._lock:
            delivery, child.delivery = child.delivery, None
            child.retiring = retiring
        if delivery is not None and delivery.id == delivery_id:
            self._done.put((delivery, outcome))

    def _announce(self, delivery: Delivery, message: Message) -> None:
        """Tell the worker what a child started, from the message the child decoded."""
        task = self._local.app.tasks.get(message.task)
        if self._local.started is None or task is None:
            return
        try:
            self._local.started(delivery, message, task)
        except BaseException:  # a task_started hook, say: the listener must live on
            log.exception("task_started failed for delivery %s", delivery.id)

    def _reap(self, child: Child) -> None:
        while not child.eof and child.results.poll():
            self._read(child)
        child.process.join()
        with self._lock:
            self._children.remove(child)
            self._children.append(Child(self._ctx, self._spec, self._draining))
            delivery = child.delivery
        code = child.process.exitcode
        if delivery is not None:
            if child.verdict is None:
                log.warning(
                    "child %s died running delivery %s (exit code %s); replaced",
                    child.process.pid,
                    delivery.id,
                    code,
                )
            lost = Outcome(Kind.LOST, reason=f"its process {child.process.pid} died ({code})")
            self._done.put((delivery, child.verdict or lost))
        elif not child.retiring:
            log.warning("child %s exited (exit code %s); replaced", child.process.pid, code)
        child.close()


def _context(modules: list[str]) -> BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(dict.fromkeys(modules)))  # children fork with the app imported
    return ctx


def app_path(app: App) -> str:
    """Where `app` can be imported from, as module:attribute, for a child to import it."""
    first = [t.fn.__module__ for t in app.tasks.values()]  # usually defined beside its tasks
    for name in [*dict.fromkeys(first), *list(sys.modules)]:
        if name in _MAIN:
            continue
        for attr, value in list(getattr(sys.modules.get(name), "__dict__", {}).items()):
            if value is app.origin:
                return f"{name}:{attr}"
    raise ConfigurationError(
        "the processes pool imports the app in each child: define it at module level "
        "in an importable module (module:attribute), not in __main__"
    )
