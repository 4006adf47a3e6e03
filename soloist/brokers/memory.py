"""An in-process broker for tests of user code and eager set-ups.

It honours the whole broker contract (leases, fencing, delivery counts, dead letters) but
lives in one process's memory: nothing survives the process, and other processes cannot
see it. Delays and leases count monotonic time: a step of the wall clock moves neither.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .base import (
    DEFAULT_MAX_DELIVERIES,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
    positive_int,
    url_options,
)

_new_tuple = tuple.__new__


@dataclass
class _Record:
    id: str
    queue: str
    body: bytes
    priority: int
    visible_at: float
    deliveries: int = 0
    retries: int = 0
    receipt: int = 0  # 0 while waiting; the current lease's receipt while leased
    version: int = 0
    seq: int = 0  # its age: publication order


class MemoryBroker(Broker):
    def __init__(self, url: str = "memory://", max_deliveries: int = DEFAULT_MAX_DELIVERIES):
        self.url = url
        options = url_options(url, {"max_deliveries": positive_int})[1]
        self.max_deliveries = options.get("max_deliveries", max_deliveries)
        # Held through its own (C) context manager: the Condition's is Python-level.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._records: dict[str, _Record] = {}
        # Per queue: due records by (-priority, seq), and records that become due later
        # (delayed, or leased until the lease lapses) by time. An entry whose version no
        # longer matches its record's is stale and skipped when popped.
        self._ready: dict[str, list[tuple[int, int, str, int]]] = {}
        self._timed: dict[str, list[tuple[float, int, str, int]]] = {}
        self._dead: dict[str, dict[str, DeadLetter]] = {}
        self._workers: dict[str, tuple[bytes, float, float]] = {}
        self._seq = itertools.count()
        self._receipts = itertools.count(1)
        #: Fetches waiting on `_cond`: with none, a push has nobody to wake.
        self._waiting = 0

    def _push(self, rec: _Record) -> None:
        """(Re)schedule `rec`; earlier heap entries for it go stale and are skipped."""
        rec.version += 1
        if rec.visible_at <= time.monotonic():
            entry = (-rec.priority, rec.seq, rec.id, rec.version)
            heapq.heappush(self._ready.setdefault(rec.queue, []), entry)
        else:
            timed = (rec.visible_at, next(self._seq), rec.id, rec.version)
            heapq.heappush(self._timed.setdefault(rec.queue, []), timed)
        if self._waiting:
            self._cond.notify_all()

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        with self._lock:
            rec = _Record(
                uuid.uuid4().hex,
                queue,
                body,
                priority,
                time.monotonic() + max(delay, 0),
                seq=next(self._seq),
            )
            self._records[rec.id] = rec
            self._push(rec)
            return rec.id

    def _due(self, queue: str, now: float) -> _Record | None:
        """Pop the best due record of `queue`: highest priority, then oldest."""
        records, timed = self._records, self._timed.get(queue)
        while timed and timed[0][0] <= now:
            _, _, rid, version = heapq.heappop(timed)
            rec = records.get(rid)
            if rec is not None and rec.version == version:
                entry = (-rec.priority, rec.seq, rid, version)
                heapq.heappush(self._ready.setdefault(queue, []), entry)
        ready = self._ready.get(queue)
        while ready:
            _, _, rid, version = heapq.heappop(ready)
            rec = records.get(rid)
            if rec is not None and rec.version == version:
                return rec
        return None

    def _next_due(self, queues: Sequence[str]) -> float | None:
        times = [self._timed[q][0][0] for q in queues if self._timed.get(q)]
        return min(times) if times else None

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        with self._lock:
            while True:
                now = time.monotonic()
                for queue in queues:
                    leased = self._timed.setdefault(queue, [])
                    while len(out) < max_count:
                        rec = self._due(queue, now)
                        if rec is None:
                            break
                        if rec.deliveries and out:
                            # Back from a lapsed lease: it goes out alone (Broker.fetch).
                            self._push(rec)
                            return out
                        rec.deliveries += 1
                        if rec.deliveries > self.max_deliveries:
                            self._bury(rec, poison_reason(rec.deliveries - 1))
                            continue
                        rec.receipt = next(self._receipts)
                        rec.visible_at = now + lease
                        if lease > 0:  # due again when the lease lapses (`_push`, inlined)
                            rec.version += 1
                            entry = (rec.visible_at, next(self._seq), rec.id, rec.version)
                            heapq.heappush(leased, entry)
                            if self._waiting:  # it may lapse before their wait ends
                                self._cond.notify_all()
                        else:
                            self._push(rec)
                        # tuple.__new__: a Delivery's own __new__ is Python, twice the cost.
                        out.append(
                            _new_tuple(
                                Delivery,
                                (rec.id, queue, rec.body, rec.deliveries, rec.retries, rec.receipt),
                            )
                        )
                        if rec.deliveries > 1:
                            return out
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                next_due = self._next_due(queues)
                wait = remaining if next_due is None else min(remaining, next_due - now)
                self._waiting += 1
                try:
                    self._cond.wait(max(wait, 0.001))
                finally:
                    self._waiting -= 1

    def _held(self, delivery: Delivery) -> _Record | None:
        rec = self._records.get(delivery.id)
        # A lapsed lease still settles while nobody else took the message: the receipt
        # changes only when it is handed out again.
        return rec if rec is not None and rec.receipt == delivery.receipt else None

    def ack(self, delivery: Delivery) -> bool:
        with self._lock:
            rec = self._records.get(delivery.id)  # `_held`, inlined: one per task
            if rec is None or rec.receipt != delivery.receipt:
                return False
            del self._records[rec.id]
            return True

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        with self._lock:
            rec = self._held(delivery)
            if rec is None:
                return False
            rec.retries += int(counted)
            rec.deliveries = 0
            rec.receipt = 0
            rec.visible_at = time.monotonic() + max(delay, 0)
            self._push(rec)
            return True

    def _bury(self, rec: _Record, reason: str) -> None:
        self._records.pop(rec.id, None)
        self._dead.setdefault(rec.queue, {})[rec.id] = DeadLetter(
            rec.id, rec.queue, rec.body, reason, rec.deliveries, rec.retries, time.time()
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        with self._lock:
            rec = self._held(delivery)
            if rec is None:
                return False
            self._bury(rec, reason)
            return True

    def release(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for delivery in deliveries:
                rec = self._held(delivery)
                if rec is not None:
                    rec.deliveries -= 1
                    rec.receipt = 0
                    rec.visible_at = time.monotonic()
                    self._push(rec)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        stale = []
        with self._lock:
            for delivery in deliveries:
                rec = self._held(delivery)
                if rec is None:
                    stale.append(delivery)
                else:
                    rec.visible_at = time.monotonic() + lease
                    self._push(rec)
        return stale

    def ping(self) -> None:
        """In-process: always there."""

    def depth(self, queue: str) -> int:
        with self._lock:
            return sum(1 for r in self._records.values() if r.queue == queue and not r.receipt)

    def stats(self, queue: str) -> QueueStats:
        now = time.monotonic()
        with self._lock:
            mine = [r for r in self._records.values() if r.queue == queue]
            return QueueStats(
                depth=sum(1 for r in mine if not r.receipt),
                delayed=sum(1 for r in mine if not r.receipt and r.visible_at > now),
                in_flight=sum(1 for r in mine if r.receipt and r.visible_at > now),
                dead=len(self._dead.get(queue, {})),
            )

    def purge(self, queue: str) -> int:
        with self._lock:
            ids = [r.id for r in self._records.values() if r.queue == queue and not r.receipt]
            for rid in ids:
                del self._records[rid]
            return len(ids)

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            dead = sorted(self._dead.get(queue, {}).values(), key=lambda d: d.dead_at)
            return dead[:limit]

    def _take_dead(self, queue: str, ids: Sequence[str] | None) -> list[DeadLetter]:
        store = self._dead.get(queue, {})
        chosen = list(store) if ids is None else [i for i in ids if i in store]
        return [store.pop(i) for i in chosen]

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        with self._lock:
            taken = self._take_dead(queue, ids)
            for dead in taken:
                rec = _Record(dead.id, queue, dead.body, 0, time.monotonic(), seq=next(self._seq))
                self._records[rec.id] = rec
                self._push(rec)
            return len(taken)

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        with self._lock:
            return len(self._take_dead(queue, ids))

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        with self._lock:
            now = time.time()
            self._workers[worker_id] = (info, now, now + ttl)

    def workers(self) -> dict[str, tuple[bytes, float]]:
        now = time.time()
        with self._lock:
            return {k: (i, s) for k, (i, s, exp) in self._workers.items() if exp > now}

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)
