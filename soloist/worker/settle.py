"""Settling a run's outcome: record → settle → announce, the same steps for every outcome.

* Record: store the result, move the workflow on, emit `before_ack`; all before the
  message is settled, so a crash in between leaves a message that is redelivered (and
  finds its result), never a lost one.
* Settle: the broker call the outcome asks for: ack (success, revocation), retry,
  dead-letter (failure, dead); give back a run that did not end (deferred, lost, released).
* Announce: count, log and emit the outcome's event; or, where the broker refused the
  settle because another worker holds the message now, count it stale and drop it.

Acks are the common case and where the speed is. With `--settle-batch 1` (the default)
each is settled as its task ends, before the next starts, so a SIGKILL reruns only the
running task: where the broker has an ack pipe, the ack (and the result record with it)
is written without waiting for its reply, and replies are read between fetches. With
`--settle-batch N` up to N ended tasks wait to be recorded and acked together, in two
round trips; a SIGKILL runs those again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING

from ..brokers.base import AckPipe, Delivery
from ..errors import BrokerUnavailable
from ..execution import EXPIRED, STATE_OF, Kind, Outcome
from ..workflow import proceed
from .constants import PIPE_DEPTH, PREFETCH_HORIZON

if TYPE_CHECKING:
    from .loop import Worker

log = logging.getLogger("soloist.worker")

Ended = tuple[Delivery, Outcome]
Record = tuple[str, str, bytes]

#: Outcomes settled by an ack, which may wait for a batch or go down the ack pipe.
ACKED = frozenset({Kind.SUCCESS, Kind.REVOKED})
#: Outcomes of a run that ended: recorded before they are settled. The others give the
#: message back (deferred by a limit, its run lost, never started).
RECORDED = ACKED | {Kind.RETRY, Kind.FAILURE, Kind.DEAD}

EVENT_OF = {
    Kind.SUCCESS: "task_succeeded",
    Kind.RETRY: "task_retried",
    Kind.FAILURE: "task_failed",
    Kind.DEAD: "dead_lettered",
    Kind.REVOKED: "task_revoked",
}


def record_of(outcome: Outcome) -> Record | None:
    """What to store for `outcome`: (task id, state, encoded result), or None."""
    if outcome.record is None or not outcome.task_id:
        return None
    return (outcome.task_id, STATE_OF[outcome.kind], outcome.record)


class Settler:
    """Settles what `worker`'s runs ended with; the ended tasks it holds until they are."""

    def __init__(self, worker: Worker, batch: int) -> None:
        self.worker = worker
        self.app = worker.app
        self.broker = worker.broker
        self.stats = worker.stats
        #: How many ended tasks may wait to be acked together: a SIGKILL runs them again.
        self.batch = max(batch, 1)
        #: Acks written as tasks end, replies read later; made by `open` (batch 1 only).
        self.pipe: AckPipe | None = None
        #: Ended tasks waiting for their batch to be acked.
        self.acks: list[Ended] = []
        #: Ended tasks whose ack went down the pipe, their replies unread, in order.
        self.sent: list[Ended] = []
        #: Ended tasks whose settling met a store outage, to settle once it is over.
        self.unsettled: collections.deque[Ended] = collections.deque()
        #: Since when the oldest of `acks` (or of `sent`) has waited.
        self._since = 0.0
        self._lock = threading.Lock()  # the main thread and the keeper both flush

    def open(self) -> None:
        """Make the ack pipe; called once the result store is known to be usable."""
        if self.batch == 1:
            self.pipe = self.broker.ack_pipe(self.app.results)

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()

    def held(self) -> list[Delivery]:
        """The deliveries ended and not yet known to be settled (still leased)."""
        return [d for d, _ in [*self.acks, *self.unsettled, *self.sent]]

    def acking(self) -> set[str]:
        """Ids of the deliveries whose ack is on its way: a lease found lapsed may be one
        that ack already ended."""
        return {d.id for d, _ in list(self.sent)}

    def drop(self) -> None:
        """Forget every ended task held: the stores stayed down, their leases will lapse."""
        self.acks.clear()
        self.sent.clear()
        self.unsettled.clear()

    def settle(self, delivery: Delivery, outcome: Outcome, started: float | None) -> None:
        """Record, settle and announce `outcome`, or hold its ack for a batch. `started`
        (monotonic) is when its run began, if it ran here."""
        kind = outcome.kind
        try:
            if (
                started is not None
                and time.monotonic() - started > self.worker.lease * 0.9
                and self._gone_stale(delivery, outcome)
            ):
                self._stale(delivery, outcome)
            elif kind is Kind.SUCCESS or kind is Kind.REVOKED:  # ACKED (identity: no hashing)
                if self.acks or (self.batch > 1 and self.worker.prefetched):
                    if not self.acks:
                        self._since = time.monotonic()
                    self.acks.append((delivery, outcome))
                else:
                    self._ack_one(delivery, outcome)  # no batch to wait for
            else:
                if kind in RECORDED:
                    self._record([(delivery, outcome)], carried=False)
                self._announce([(delivery, outcome)], [self._settle(delivery, outcome)])
        except BrokerUnavailable:
            # A store outage, not the task's fault: keep the lease and settle it later
            # (unless its ack went down the pipe: its reply is read once the store answers).
            if not any(d is delivery for d, _ in self.sent):
                self.unsettled.append((delivery, outcome))
            raise
        if self.acks and (not self.worker.prefetched or len(self.acks) >= self._window()):
            self.flush()

    def _gone_stale(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Whether a run that outlived its lease (a frozen worker: the keeper could not
        renew it) finds its delivery stale, the message held by another worker now: then
        nothing is settled."""
        if outcome.kind not in RECORDED:
            return False
        stale = self.broker.extend([delivery], self.worker.lease)
        return bool(stale)

    def resume(self) -> None:
        """After an outage: settle what met it (queued again if it fails again)."""
        while self.unsettled:
            self.settle(*self.unsettled.popleft(), None)
        self.drain()

    def drain(self) -> None:
        """Ack what waits for a batch and read the replies of what went down the pipe."""
        self.flush()
        self.collect()

    def _window(self) -> int:
        return min(self.batch, self.worker.prefetch.size)

    def _record(
        self, ended: list[Ended], carried: bool, flows: list[Outcome] | None = None
    ) -> None:
        """Store the results (unless the ack pipe `carried` them), move workflows on (those
        of `ended`, unless given) and emit `before_ack`."""
        if not carried:
            records = [r for _, o in ended if (r := record_of(o)) is not None]
            if records:
                self.app.results.put_many(records, self.app.result_ttl)
        if flows is None:
            flows = [o for _, o in ended if o.workflow is not None and o.kind is not Kind.RETRY]
        if flows:
            proceed(self.app, flows)  # stored, not yet settled: see soloist.workflow
        hooks = self.app.hooks
        if "before_ack" in hooks.active:
            for delivery, outcome in ended:
                hooks.emit("before_ack", worker=self.worker, delivery=delivery, outcome=outcome)

    def _settle(self, delivery: Delivery, outcome: Outcome) -> bool:
        """The broker call one outcome (not an ack) asks for; False if the delivery was
        stale."""
        kind = outcome.kind
        if kind is Kind.RETRY:
            return self.broker.retry(delivery, outcome.delay)
        if kind in (Kind.FAILURE, Kind.DEAD):
            return self.broker.dead_letter(delivery, outcome.reason)
        if kind is Kind.DEFERRED:
            # Held back by a cluster-wide limit (soloist.limits): back on the queue until it
            # may run, with no lease held meanwhile and no retry counted.
            self.broker.retry(delivery, outcome.delay, counted=False)
        elif kind is Kind.LOST:
            # Its process died mid-run: end the lease now, so the message is redelivered
            # with its delivery count raised, as if this worker had died.
            self.broker.abandon([delivery])
        else:
            self.broker.release([delivery])  # RELEASED: it never started
        return True

    def flush_overdue(self) -> None:
        """From the keeper: settle what has waited past PREFETCH_HORIZON, so results of
        finished tasks do not wait for a long task the main thread is running now."""
        if time.monotonic() - self._since > PREFETCH_HORIZON:
            if self.acks:
                self.flush()
            if self.sent:
                self.collect()

    def flush(self) -> None:
        """Record and ack the ended tasks waiting for it."""
        with self._lock:
            acks, self.acks = self.acks, []
            if not acks:
                return
            try:
                self._ack(acks)
            except BrokerUnavailable:
                # Still held: acked once the stores answer again (less what went down the pipe).
                self.acks[:0] = [a for a in acks if not any(a is s for s in self.sent)]
                raise

    def _ack_one(self, delivery: Delivery, outcome: Outcome) -> None:
        """`flush` of one ended task, acked as it ends (`--settle-batch 1`, or nothing
        prefetched to batch it with): the same steps, without a batch's lists and lock."""
        hooks = self.app.hooks
        pipe = self.pipe
        record = None
        if outcome.workflow is not None or "before_ack" in hooks.active:
            self._record([(delivery, outcome)], carried=False)  # (as `_ack` does)
        elif outcome.record is not None and outcome.task_id:  # `record_of`, inlined
            record = (outcome.task_id, STATE_OF[outcome.kind], outcome.record)
            if pipe is None or not pipe.records:
                self.app.results.put(*record, self.app.result_ttl)
                record = None
        if pipe is not None:
            with self._lock:  # the keeper may be reading the pipe's replies (`collect`)
                if not self.sent:
                    self._since = time.monotonic()
                pipe.send(delivery, record, self.app.result_ttl)
                self.sent.append((delivery, outcome))
                if len(self.sent) >= PIPE_DEPTH:
                    self._collect()
            return
        ok = self.broker.ack(delivery)
        if ok and outcome.kind is Kind.SUCCESS:  # `_announce`'s common case, inlined
            self.stats.done += 1
            if "task_succeeded" in hooks.active:
                hooks.emit("task_succeeded", worker=self.worker, delivery=delivery, outcome=outcome)
        else:
            self._announce([(delivery, outcome)], [ok])

    def _ack(self, acks: list[Ended]) -> None:
        pipe = self.pipe
        flows = [o for _, o in acks if o.workflow is not None]
        # The pipe carries the records with the acks unless something must see them
        # stored first: a workflow's next step, a before_ack hook.
        carried = (
            pipe is not None
            and pipe.records
            and not flows
            and "before_ack" not in self.app.hooks.active
        )
        self._record(acks, carried, flows)
        if pipe is None:
            self._announce(acks, self.broker.ack_many([d for d, _ in acks]))
            return
        if not self.sent:
            self._since = time.monotonic()
        ttl = self.app.result_ttl
        for delivery, outcome in acks:
            pipe.send(delivery, record_of(outcome) if carried else None, ttl)
            self.sent.append((delivery, outcome))
        if len(self.sent) >= PIPE_DEPTH:
            self._collect()

    def collect(self) -> None:
        """Read the replies of the acks sent down the pipe, and announce those tasks."""
        if self.sent:
            with self._lock:
                self._collect()

    def _collect(self) -> None:
        if self.sent and self.pipe is not None:
            settled = self.pipe.collect()  # BrokerUnavailable keeps them for the next call
            sent, self.sent = self.sent, []
            self._announce(sent, settled)

    def _announce(self, ended: list[Ended], settled: list[bool]) -> None:
        """Count the settled tasks, log and emit their events; a refused settle was stale."""
        hooks = self.app.hooks
        stats = self.stats
        for (delivery, outcome), ok in zip(ended, settled, strict=True):
            kind = outcome.kind
            if not ok:
                self._stale(delivery, outcome)
                continue
            if kind is Kind.SUCCESS:
                stats.done += 1
            elif kind is Kind.REVOKED:
                stats.expired += outcome.reason == EXPIRED
                log.info("task %s[%s] %s", outcome.task, outcome.task_id, outcome.reason)
            elif kind is Kind.RETRY:
                stats.retried += 1
                log.info(
                    "task %s[%s] retry in %.2fs: %s",
                    outcome.task,
                    outcome.task_id,
                    outcome.delay,
                    outcome.reason,
                )
            elif kind in (Kind.FAILURE, Kind.DEAD):
                stats.failed += kind is Kind.FAILURE
                stats.dead += 1
                log.warning(
                    "task %s[%s] dead-lettered: %s",
                    outcome.task or "?",
                    outcome.task_id or delivery.id,
                    outcome.reason,
                )
            elif kind is Kind.DEFERRED:
                log.debug(
                    "task %s[%s] deferred %.2fs", outcome.task, outcome.task_id, outcome.delay
                )
            elif kind is Kind.LOST:
                stats.lost += 1
                log.warning("delivery %s given back: %s", delivery.id, outcome.reason)
            event = EVENT_OF.get(kind)
            if event is not None and event in hooks.active:
                hooks.emit(event, worker=self.worker, delivery=delivery, outcome=outcome)

    def _stale(self, delivery: Delivery, outcome: Outcome) -> None:
        """The lease on `delivery` lapsed and another worker holds it: drop `outcome`."""
        self.stats.stale += 1
        log.warning(
            "task %s[%s]: lease lost, another worker has it; outcome dropped",
            outcome.task or "?",
            outcome.task_id or delivery.id,
        )
