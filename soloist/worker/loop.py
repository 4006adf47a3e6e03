"""The worker: fetch → run → settle, with shutdown and bookkeeping handed to others.

Everything that is not that loop lives elsewhere: running a delivery in `soloist.execution`,
concurrency in the pool, lease renewal, heartbeats and time limits in the keeper thread,
signals in `shutdown`, cross-cutting features in hooks.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..brokers.base import AckPipe, Delivery
from ..errors import BrokerUnavailable, ConfigurationError, SoloistError
from ..execution import EXPIRED, STATE_OF, Kind, Outcome, SoftLimit, TaskRunner
from ..message import Message
from ..pools import create, tree
from ..pools.base import Pool
from ..results.base import STARTED
from ..task import Task
from ..urls import shown
from ..workflow import proceed
from .beat import Beat
from .constants import (
    BUSY_FETCH_WAIT,
    DEFAULT_LEASE,
    EXIT_COLD_SHUTDOWN,
    EXIT_OK,
    EXIT_RECYCLE,
    EXIT_UNAVAILABLE,
    FETCH_WAIT,
    PIPE_DEPTH,
    PREFETCH_HORIZON,
)
from .cpus import CpuBudget
from .keeper import Keeper
from .outage import ride_out
from .prefetch import Prefetch
from .revocation import Revocations
from .shutdown import ColdShutdown, Shutdown

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("soloist.worker")

_HOOK_BY_KIND = {
    Kind.SUCCESS: "task_succeeded",
    Kind.RETRY: "task_retried",
    Kind.FAILURE: "task_failed",
    Kind.DEAD: "dead_lettered",
    Kind.REVOKED: "task_revoked",
}


@dataclass
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
        self.shutdown = Shutdown()
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
        #: Ended tasks whose message is acked in one batch (see `settle`).
        self.acks: list[tuple[Delivery, Outcome]] = []
        #: How many ended tasks may wait to be settled together: a SIGKILL runs them again.
        self.settle_batch = max(settle_batch, 1)
        #: Settling each task at once: where the broker can, acks (and results) are
        #: written as tasks end and their replies read between fetches (`_collect`).
        #: Made by `run` once `check` found the result store usable.
        self.pipe: AckPipe | None = None
        #: Ended tasks whose ack went down the pipe, their replies unread, in order.
        self.sent: list[tuple[Delivery, Outcome]] = []
        #: Ended tasks whose settling met a store outage, to settle again once it is over.
        self.unsettled: collections.deque[tuple[Delivery, Outcome]] = collections.deque()
        #: Why the worker stopped, when that is not a shutdown asked for: its last line says so.
        self.stop_reason = ""
        self._acks_since = 0.0
        self._flush_lock = threading.Lock()
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
        limit = task.options.time_limit or self.time_limit
        self.running[delivery.id] = Running(
            delivery,
            message.id,
            task.name,
            time.time(),
            time.monotonic(),
            limit,
            workflow=message.options.get("wf"),
        )
        if task.limits is not None and task.limits.max_concurrency is not None:
            key = task.limits.slot_key(message.args, message.kwargs)
            self.running[delivery.id].slot = (key, message.id)
        if self.keeper is not None and limit:
            self.keeper.arm(self.running[delivery.id])
        if task.options.track_started:
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
        ended = [d for d, _ in list(self.acks) + list(self.unsettled) + list(self.sent)]
        return pool + list(self.prefetched) + ended

    def check(self) -> None:
        """Reach the broker, the result store and its revocation log, or raise one
        `SoloistError` saying which could not be used. Done before the first fetch: a worker
        that could not record a result would run a task, die, and have it run again."""
        self.broker.depth(self.queues[0])
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
        if self.settle_batch == 1:
            self.pipe = self.broker.ack_pipe(self.app.results)
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
                self._flush()
                self._collect()
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
            self._flush()  # nothing waits to be acked while the loop blocks
            self._collect()
            done = self.pool.collect(FETCH_WAIT)
        for n, (finished, outcome) in enumerate(done):
            try:
                self.settle(finished, outcome)
            except BrokerUnavailable:
                self.unsettled.extend(done[n + 1 :])
                raise
        if not self.pool.free():
            return True
        # Outcomes are settled between fetches: keep those short while tasks run.
        delivery = self._next(BUSY_FETCH_WAIT if self.pool.busy() else FETCH_WAIT)
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
        while self.unsettled:
            self.settle(*self.unsettled.popleft())  # queued again if it fails
        self._flush()
        self._collect()
        if not self.prefetched:
            self._fill(0)

    def _unavailable(self, exc: BrokerUnavailable) -> int:
        """Stopping while the stores are down: what this worker holds cannot be settled
        or given back; its leases lapse and other workers run it."""
        held = len(self.held())
        self.prefetched.clear()
        self.running.clear()
        self.submitted.clear()
        self.acks.clear()
        self.sent.clear()
        self.unsettled.clear()
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
        self._flush()
        self._collect()  # the replies came back while tasks ran: no waiting
        got = self.broker.fetch(self.queues, self.prefetch.size, self.lease, wait)
        self.prefetched.extend(got)
        if "received" in self.app.hooks.active:
            for delivery in got:
                self.app.hooks.emit("received", worker=self, delivery=delivery)

    def _drained(self) -> bool:
        return all(self.broker.depth(q) == 0 for q in self.queues)

    def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Record the outcome, then ack, retry or dead-letter the message (in that order,
        so a crash in between leaves a message that is redelivered, never a lost one).

        With `settle_batch` N > 1, acks wait while prefetched deliveries remain (still
        leased, renewed by the keeper), so one round trip stores the results of up to N
        tasks and another acks them; a SIGKILL then runs those again. At 1 (the default)
        each task is settled before the next starts: a kill reruns only the running one."""
        if "settling" in self.app.hooks.active:
            self.app.hooks.emit("settling", worker=self, delivery=delivery, outcome=outcome)
        self.submitted.pop(delivery.id, None)
        running = self.running.pop(delivery.id, None)
        if running is not None:
            if self.keeper is not None:
                self.keeper.disarm(running)
            if running.workflow is not None and outcome.workflow is None:
                outcome.workflow = running.workflow  # stopped by the pool or the keeper
        if self.prefetch.ran(outcome.runtime) and self.prefetched:
            # A slow task: what waits behind it goes to other workers now.
            self.broker.release(list(self.prefetched))
            self.prefetched.clear()
        if outcome.kind is Kind.RELEASED:
            self.broker.release([delivery])  # it never started: as if never fetched
            return
        try:
            if outcome.kind is Kind.DEFERRED:
                self._defer(delivery, outcome)
            else:
                self._record(delivery, outcome, running)
        except BrokerUnavailable:
            # A store outage, not the task's fault: keep the lease and settle it later.
            self.unsettled.append((delivery, outcome))
            raise
        if self.acks and (
            len(self.acks) >= min(self.settle_batch, self.prefetch.size) or not self.prefetched
        ):
            self._flush()

    def _defer(self, delivery: Delivery, outcome: Outcome) -> None:
        """Held back by a cluster-wide limit (soloist.limits): back on the queue until it
        may run, with no lease held meanwhile and no retry counted."""
        self.broker.retry(delivery, outcome.delay, counted=False)
        log.debug("task %s[%s] deferred %.2fs", outcome.task, outcome.task_id, outcome.delay)

    def _record(self, delivery: Delivery, outcome: Outcome, running: Running | None) -> None:
        """Store a failure and retry or dead-letter the message; queue a success or a
        revocation to be acked in a batch (`_flush`)."""
        if outcome.kind is Kind.LOST:
            # Its process died mid-run: end the lease now, so the message is redelivered
            # with its delivery count raised, as if this worker had died.
            self.broker.abandon([delivery])
            self.stats.lost += 1
            log.warning("delivery %s given back: %s", delivery.id, outcome.reason)
            return
        # A long run may have outlived its lease (a frozen worker: the keeper could not
        # renew it); if another worker holds the message now, settle nothing.
        if running is not None and time.monotonic() - running.started > self.lease * 0.9:
            stale = self.broker.extend([delivery], self.lease)  # what is no longer held
            if stale:
                self._stale(delivery, outcome)
                return
        if outcome.kind in (Kind.SUCCESS, Kind.REVOKED):
            if not self.acks:
                self._acks_since = time.monotonic()
            self.acks.append((delivery, outcome))
            return
        if outcome.record is not None and outcome.task_id:
            state = STATE_OF[outcome.kind]
            self.app.results.put(outcome.task_id, state, outcome.record, self.app.result_ttl)
        if outcome.workflow is not None and outcome.kind is not Kind.RETRY:
            proceed(self.app, [outcome])  # before the ack: see soloist.workflow
        self.app.hooks.emit("before_ack", worker=self, delivery=delivery, outcome=outcome)
        if outcome.kind is Kind.RETRY:
            settled = self.broker.retry(delivery, outcome.delay)
            self.stats.retried += 1
            log.info(
                "task %s[%s] retry in %.2fs: %s",
                outcome.task,
                outcome.task_id,
                outcome.delay,
                outcome.reason,
            )
        else:
            settled = self.broker.dead_letter(delivery, outcome.reason)
            if outcome.kind is Kind.FAILURE:
                self.stats.failed += 1
            self.stats.dead += 1
            log.warning(
                "task %s[%s] dead-lettered: %s",
                outcome.task or "?",
                outcome.task_id or delivery.id,
                outcome.reason,
            )
        if not settled:
            self._stale(delivery, outcome)
            return
        self.app.hooks.emit(
            _HOOK_BY_KIND[outcome.kind], worker=self, delivery=delivery, outcome=outcome
        )

    def flush_stale(self) -> None:
        """From the keeper: settle what has waited past PREFETCH_HORIZON, so results of
        finished tasks do not wait for a long task the main thread is running now."""
        if self.acks and time.monotonic() - self._acks_since > PREFETCH_HORIZON:
            self._flush()
        if self.sent and time.monotonic() - self._acks_since > PREFETCH_HORIZON:
            self._collect()

    def _flush(self) -> None:
        """Store the results of the tasks that ended, then ack their messages."""
        with self._flush_lock:  # the main thread and the keeper both flush
            self._flush_locked()

    def _flush_locked(self) -> None:
        acks, self.acks = self.acks, []
        if not acks:
            return
        try:
            self._store_and_ack(acks)
        except BrokerUnavailable:
            # Still held: acked once the stores answer again (less what went down the pipe).
            self.acks[:0] = [a for a in acks if not any(a is s for s in self.sent)]
            raise

    def _store_and_ack(self, acks: list[tuple[Delivery, Outcome]]) -> None:
        # SUCCESS, and REVOKED for an expired call (revoke() records its own).
        records = [(o.task_id, STATE_OF[o.kind], o.record) for _, o in acks if o.record is not None]
        flows = [o for _, o in acks if o.workflow is not None]
        hooks = self.app.hooks
        pipe = self.pipe
        if pipe is not None and not flows and "before_ack" not in hooks.active:
            if records and not pipe.records:
                self.app.results.put_many(records, self.app.result_ttl)
            if not self.sent:
                self._acks_since = time.monotonic()
            for delivery, outcome in acks:
                record = outcome.record
                pipe.send(
                    delivery,
                    (outcome.task_id, STATE_OF[outcome.kind], record)
                    if record is not None and pipe.records
                    else None,
                    self.app.result_ttl,
                )
                self.sent.append((delivery, outcome))
            if len(self.sent) >= PIPE_DEPTH:
                self._collect_locked()
            return
        if records:
            self.app.results.put_many(records, self.app.result_ttl)
        if flows:
            proceed(self.app, flows)  # stored, not yet acked: see soloist.workflow
        if "before_ack" in hooks.active:
            for delivery, outcome in acks:
                hooks.emit("before_ack", worker=self, delivery=delivery, outcome=outcome)
        self._announce(acks, self.broker.ack_many([d for d, _ in acks]))

    def _collect(self) -> None:
        """Read the replies of the acks sent down the pipe, and announce those tasks."""
        if self.sent:
            with self._flush_lock:  # the main thread and the keeper both collect
                self._collect_locked()

    def _collect_locked(self) -> None:
        if self.sent and self.pipe is not None:
            settled = self.pipe.collect()  # BrokerUnavailable keeps them for the next call
            sent, self.sent = self.sent, []
            self._announce(sent, settled)

    def _announce(self, acks: list[tuple[Delivery, Outcome]], settled: list[bool]) -> None:
        """Count the acked tasks and emit their events; a refused ack lost its lease."""
        hooks = self.app.hooks
        for (delivery, outcome), acked in zip(acks, settled, strict=True):
            if not acked:
                self._stale(delivery, outcome)
                continue
            if outcome.kind is Kind.SUCCESS:
                self.stats.done += 1
            else:
                self.stats.expired += outcome.reason == EXPIRED
                log.info("task %s[%s] %s", outcome.task, outcome.task_id, outcome.reason)
            event = _HOOK_BY_KIND[outcome.kind]
            if event in hooks.active:
                hooks.emit(event, worker=self, delivery=delivery, outcome=outcome)

    def _stale(self, delivery: Delivery, outcome: Outcome) -> None:
        """The lease on `delivery` lapsed and another worker holds it: drop `outcome`."""
        self.stats.stale += 1
        log.warning(
            "task %s[%s]: lease lost, another worker has it; outcome dropped",
            outcome.task or "?",
            outcome.task_id or delivery.id,
        )

    def _finish_running(self) -> None:
        """Warm shutdown: let the pool finish what runs, settle it, hand back the rest."""
        self.broker.release(list(self.prefetched))
        self.prefetched.clear()
        self.pool.drain()
        while self.pool.busy():
            for delivery, outcome in self.pool.collect(FETCH_WAIT):
                self.settle(delivery, outcome)
        self._flush()
        self._collect()

    def _stop(self) -> None:
        if self.prefetched:
            self.broker.release(list(self.prefetched))
            self.prefetched.clear()
        if self.beat is not None:
            self.beat.stop()
        if self.keeper is not None:
            self.keeper.stop()
        if self.pipe is not None:
            self.pipe.close()
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
