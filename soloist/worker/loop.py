"""The worker: fetch → run → settle, with shutdown and bookkeeping handed to others.

Everything that is not that loop lives elsewhere: running a delivery in `soloist.execution`,
concurrency in the pool, recording and settling outcomes in `settle`, lease renewal,
heartbeats and time limits in the keeper thread, signals in `shutdown`, cross-cutting
features in hooks.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..brokers.base import Delivery
from ..errors import BrokerUnavailable, ConfigurationError, SoloistError
from ..execution import Outcome, SoftLimit, TaskRunner
from ..message import Message
from ..pools import create, tree
from ..pools.base import Pool
from ..results.base import STARTED
from ..task import Task
from ..urls import shown
from .beat import Beat
from .constants import (
    BUSY_FETCH_WAIT,
    DEFAULT_LEASE,
    EXIT_COLD_SHUTDOWN,
    EXIT_OK,
    EXIT_RECYCLE,
    EXIT_UNAVAILABLE,
    FETCH_WAIT,
    IDLE_FETCH_WAIT,
)
from .cpus import CpuBudget
from .keeper import Keeper
from .outage import ride_out
from .prefetch import Prefetch
from .revocation import Revocations
from .settle import Settler
from .shutdown import ColdShutdown, Shutdown

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("soloist.worker")


@dataclass(slots=True)  # one per task run: slots make it cheaper to build
class Running:
    """A delivery being run, as the keeper and heartbeats see it."""

    delivery: Delivery
    task_id: str
    task: str
    since: float  # unix time
    started: float  # monotonic
    time_limit: float | None
    stopped: bool = False  # by the pool, at its hard time limit
    #: The message's workflow options, for an outcome the pool or keeper makes up.
    workflow: dict[str, Any] | None = None
    #: The (key, holder) of its concurrency slot, renewed by the keeper (soloist.limits).
    slot: tuple[str, str] | None = None


@dataclass
class Stats:
    done: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    stale: int = 0
    lost: int = 0
    expired: int = 0


class Worker:
    def __init__(
        self,
        app: App,
        queues: Sequence[str] | None = None,
        *,
        pool: str = "solo",
        concurrency: int = 1,
        prefetch: int | None = None,
        lease: float = DEFAULT_LEASE,
        burst: bool = False,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        keeper: bool = True,
        watchdog: bool = True,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: float | None = None,
        settle_batch: int = 1,
        beat: bool = False,
        cpus: int | None = None,
        owns_process: bool = True,
    ) -> None:
        self.app = app
        self.broker = app.broker
        self.revoked = Revocations(app)  # kept up to date by the keeper
        self.queues = list(queues or [app.default_queue])
        self.lease = lease
        self.burst = burst
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.stats = Stats()
        self.shutdown = Shutdown(self.broker.interrupt)
        self.prefetched: collections.deque[Delivery] = collections.deque()
        self.running: dict[str, Running] = {}
        #: The worker's process runs tasks and nothing else, so its children are theirs and
        #: are ended with them (soloist.pools.tree); False for a worker embedded in a program.
        self.owns_process = owns_process
        #: Handed to the pool and not yet settled: running, or waiting for CPUs.
        self.submitted: dict[str, Delivery] = {}
        #: The host-wide CPU budget tasks declaring `cpus` wait for (see `cpus`).
        self.cpus = CpuBudget(cpus, stopping=lambda: self.shutdown.requested) if cpus else None
        self.pool: Pool = create(
            pool,
            self._runner,
            concurrency,
            max_tasks=max_tasks_per_child,
            max_memory=max_memory_per_child,
        )
        #: None adapts the prefetch to how short tasks are, from 1 to AUTO_PREFETCH.
        self.prefetch = Prefetch(prefetch, self.pool.concurrency)
        #: Records, settles and announces what runs end with (`--settle-batch`).
        self.settler = Settler(self, settle_batch)
        #: Why the worker stopped, when that is not a shutdown asked for: its last line says so.
        self.stop_reason = ""
        self.keeper = Keeper(self, watchdog=watchdog) if keeper else None
        limited = sorted(t.name for t in app.tasks.values() if t.limits is not None)
        if limited:
            try:
                app.results.peek("limits")  # a store that cannot keep them says so now
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"tasks {', '.join(limited)} have limits, kept in the result store: {exc}"
                ) from None
        #: The scheduler of periodic tasks (`--beat`), a thread of its own.
        self.beat = Beat(app, self.id) if beat else None
        self.started_at = time.time()

    def _runner(self, soft_limit: SoftLimit) -> TaskRunner:
        factory: Callable[..., TaskRunner] = self.app.runner_factory or TaskRunner
        runner = factory(
            self.app,
            soft_limit,
            started=self._started,
            revoked=self.revoked,
            default_soft_time_limit=self.soft_time_limit,
        )
        runner.cpus = self.cpus
        return runner

    def _started(self, delivery: Delivery, message: Message, task: Task[Any, Any]) -> None:
        opts = task.options
        limit = opts.time_limit or self.time_limit
        running = self.running[delivery.id] = Running(
            delivery,
            message.id,
            task.name,
            time.time(),
            time.monotonic(),
            limit,
            False,
            message.options.get("wf"),
        )
        if task.limits is not None and task.limits.max_concurrency is not None:
            key = task.limits.slot_key(message.args, message.kwargs)
            running.slot = (key, message.id)
        if self.keeper is not None:
            self.keeper.nudge()
            if limit:
                self.keeper.arm(running)
        if opts.track_started:
            body = self.app.codec.dumps({"started": time.time(), "worker": self.id})
            self.app.results.put(message.id, STARTED, body, self.app.result_ttl)
        if "task_started" in self.app.hooks.active:
            self.app.hooks.emit(
                "task_started", worker=self, delivery=delivery, message=message, task=task
            )

    def held(self) -> list[Delivery]:
        """Every delivery this worker holds a lease on: in the pool (running or waiting for
        CPUs), prefetched, to be acked (or acked, the reply unread)."""
        pool = list(self.submitted.values())
        return pool + list(self.prefetched) + self.settler.held()

    def check(self) -> None:
        """Reach the broker, the result store and its revocation log, or raise one
        `SoloistError` saying which could not be used. Done before the first fetch: a worker
        that could not record a result would run a task, die, and have it run again."""
        self.broker.ping()
        self.broker.check()
        try:
            self.app.results.get("soloist-check")
            self.revoked.sync()
        except ConfigurationError:
            raise
        except Exception as exc:  # unreachable, or the store's own error (sqlite3, OS)
            detail = str(exc) if isinstance(exc, SoloistError) else f"{type(exc).__name__}: {exc}"
            url = shown(self.app.result_url or "")
            raise BrokerUnavailable(f"result store {url} is unusable: {detail}") from None

    def run(self) -> int:
        """Consume until shut down (or, in burst mode, until the queues are empty)."""
        self.check()
        self.settler.open()
        self.shutdown.install()
        if self.owns_process:
            tree.claim()  # what tasks start is theirs, and stays reachable (soloist.pools.tree)
        if self.keeper is not None:
            self.keeper.start()
        if self.beat is not None:
            self.beat.start()
        self.app.hooks.emit("worker_start", worker=self)
        log.info(
            "worker %s ready: broker %s, results %s, queues %s, pool %s, concurrency %d",
            self.id,
            shown(self.app.broker_url or self.broker.url),
            shown(self.app.result_url or ""),
            ",".join(self.queues),
            self.pool.name,
            self.pool.concurrency,
        )
        try:
            try:
                while not self.shutdown.requested and not self.pool.worn():
                    try:
                        if not self._step():
                            break
                    except BrokerUnavailable as exc:
                        down = ride_out(exc, self._resume, self.shutdown)
                        if down is not None:
                            self.stop_reason = f"stopped while the stores were unavailable: {down}"
                            break
                if self.beat is not None:
                    self.beat.stop()  # on its way out: no more ticks from this worker
                self._finish_running()
                return EXIT_RECYCLE if self.pool.worn() else EXIT_OK
            except ColdShutdown:
                self.settler.drain()
                self.broker.release(list(self.submitted.values()))
                return EXIT_COLD_SHUTDOWN
        except BrokerUnavailable as exc:
            return self._unavailable(exc)
        finally:
            self._stop()

    def _step(self) -> bool:
        """One turn of the loop: settle what ended, then fetch and submit. False when a
        burst run has drained its queues."""
        done = self.pool.collect(0)
        if not done and not self.pool.free():
            self.settler.drain()  # nothing waits to be settled while the loop blocks
            done = self.pool.collect(FETCH_WAIT)
        for n, (finished, outcome) in enumerate(done):
            try:
                self.settle(finished, outcome)
            except BrokerUnavailable:
                self.settler.unsettled.extend(done[n + 1 :])
                raise
        if not self.pool.free():
            return True
        # Outcomes are settled between fetches: keep those short while tasks run.
        idle = IDLE_FETCH_WAIT if self.broker.interruptible else FETCH_WAIT
        delivery = self._next(BUSY_FETCH_WAIT if self.pool.busy() else idle)
        if delivery is not None:
            self.submitted[delivery.id] = delivery
            self.pool.submit(delivery)
        elif self.burst and not self.pool.busy() and self._drained():
            return False
        return True

    def _resume(self) -> None:
        """After an outage: renew what this worker holds before anyone else can claim a
        lease that lapsed meanwhile, settle what waited, then fetch (the call that failed
        may have been a fetch)."""
        held = self.held()
        if held:
            self.broker.extend(held, self.lease)
        self.settler.resume()
        if not self.prefetched:
            self._fill(0)

    def _unavailable(self, exc: BrokerUnavailable) -> int:
        """Stopping while the stores are down: what this worker holds cannot be settled
        or given back; its leases lapse and other workers run it."""
        held = len(self.held())
        self.prefetched.clear()
        self.running.clear()
        self.submitted.clear()
        self.settler.drop()
        self.stop_reason = (
            f"the broker or result store stayed unavailable ({exc}); {held} held"
            " deliveries run again once their leases lapse"
        )
        return EXIT_UNAVAILABLE

    def _next(self, wait: float) -> Delivery | None:
        if not self.prefetched:
            # Burst mode looks without waiting first, so an empty queue ends the run at once.
            self._fill(0 if self.burst else wait)
            if not self.prefetched and self.burst and not self._drained():
                self._fill(wait)  # only delayed messages left: wait for them
        return self.prefetched.popleft() if self.prefetched else None

    def _fill(self, wait: float) -> None:
        self.settler.drain()  # the pipe's replies came back while tasks ran: no waiting
        got = self.broker.fetch(self.queues, self.prefetch.size, self.lease, wait)
        self.prefetched.extend(got)
        if "received" in self.app.hooks.active:
            for delivery in got:
                self.app.hooks.emit("received", worker=self, delivery=delivery)

    def _drained(self) -> bool:
        return all(self.broker.depth(q) == 0 for q in self.queues)

    def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """The run of `delivery` ended with `outcome`: done with its bookkeeping here, then
        recorded, settled and announced by the settler (soloist.worker.settle)."""
        if "settling" in self.app.hooks.active:
            self.app.hooks.emit("settling", worker=self, delivery=delivery, outcome=outcome)
        self.submitted.pop(delivery.id, None)
        running = self.running.pop(delivery.id, None)
        if running is not None:
            if running.time_limit and self.keeper is not None:  # (armed only with one)
                self.keeper.disarm(running)
            if running.workflow is not None and outcome.workflow is None:
                outcome.workflow = running.workflow  # stopped by the pool or the keeper
        if self.prefetch.ran(outcome.runtime) and self.prefetched:
            # A slow task: what waits behind it goes to other workers now.
            self.broker.release(list(self.prefetched))
            self.prefetched.clear()
        self.settler.settle(delivery, outcome, running.started if running else None)

    def _finish_running(self) -> None:
        """Warm shutdown: let the pool finish what runs, settle it, hand back the rest."""
        self.broker.release(list(self.prefetched))
        self.prefetched.clear()
        self.pool.drain()
        while self.pool.busy():
            for delivery, outcome in self.pool.collect(FETCH_WAIT):
                self.settle(delivery, outcome)
        self.settler.drain()

    def _stop(self) -> None:
        if self.prefetched:
            self.broker.release(list(self.prefetched))
            self.prefetched.clear()
        if self.beat is not None:
            self.beat.stop()
        if self.keeper is not None:
            self.keeper.stop()
        self.settler.close()
        self.pool.close()
        tree.end(tree.leftovers(), tree.CHILD_GRACE)  # a cold shutdown's, or orphans
        if self.owns_process:
            tree.release()
        self.shutdown.uninstall()
        self.app.hooks.emit("worker_stop", worker=self)
        log.log(
            logging.ERROR if self.stop_reason else logging.INFO,
            "worker %s stopped: %d done, %d retried, %d failed, %d dead-lettered, "
            "%d expired, %d stale%s",
            self.id,
            self.stats.done,
            self.stats.retried,
            self.stats.failed,
            self.stats.dead,
            self.stats.expired,
            self.stats.stale,
            f"; {self.stop_reason}" if self.stop_reason else "",
        )
