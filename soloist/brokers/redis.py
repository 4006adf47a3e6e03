"""The Redis broker: sorted sets moved between by Lua scripts, and blocking list pops to
sleep on.

The scripts are the .lua files in brokers/redis/; prelude.lua opens with the key schema.

Why Lua and not Streams: a stream has no priorities and no delayed entries, and XACK does
not check which consumer holds an entry, so fencing a stale holder, retrying with a delay
and dead-lettering would need Lua around Streams anyway. Sorted sets give priority-then-
age order and timed visibility directly, and one script per operation keeps each one
atomic.

An idle `fetch` does not poll. A claim that finds nothing leaves the fetcher's ticket
among its queues' waiters, and the fetcher blocks (BLPOP) on its own inbox, in the same
write as the claim. A publish to a queue with a waiter hands the message over: leased to
that fetcher and pushed on its inbox, so the BLPOP returns the message itself, and a
wake-up costs Redis no claim and the worker no round trip. Anything else that makes a
message claimable (a retry, a release, a delayed publish) wakes one waiter with an empty
entry, and it claims. A wait lasts until something the fetcher knew of falls due, at most
seconds; the ticket stands a second longer, so the next wait keeps it and claims nothing
(stay.lua). A warm shutdown ends a wait at once with CLIENT UNBLOCK (brokers/redis_wait.py)
and takes the ticket off the queues, giving back anything handed over meanwhile. So an idle
worker costs Redis a few calls a second
(benchmarks/idle_bench.py). On a Cluster a fetcher's inbox and its queues would lie in
different slots: there a publish pushes a token on the queue's wake list, fetchers block
on those, then claim (redis_cluster.py). A fetcher that claims messages and leaves more
behind wakes the next waiter.

Per message, a claim costs one HMGET and one HSET, and an ack one HMGET (the fencing
check); the sorted-set and key updates of a batch are one variadic call each.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis

from ..errors import BrokerUnavailable, ConfigurationError
from .base import (
    DEFAULT_MAX_DELIVERIES,
    AckPipe,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
)
from .cluster import WORKERS_TAG, queue_tag
from .redis_connection import RedisConnection
from .redis_pipe import RedisAckPipe
from .redis_script import _lua
from .redis_wait import Wait

log = logging.getLogger("soloist.redis")

#: Messages moved, purged or requeued per script call, so no script blocks Redis for long.
CHUNK = 1000
#: An idle fetcher that has seen no wake-up claims anyway this often: a wake-up can be lost
#: (on a Cluster, a fetcher killed between its BLPOP and its claim; on one server, a place
#: among the waiters lost in a failover, while its waits keep the ticket), and no other
#: event might come.
IDLE_RECHECK = 10.0
#: How long after a wait timed out the next wait keeps its ticket (stay.lua) instead of
#: claiming: well inside the ticket's grace (prelude.lua's TICKET_GRACE, 1 s).
STAY = 0.5
#: The layout of the broker's keys (prelude.lua), stamped in `<prefix>schema`.
SCHEMA_VERSION = 3


def queue_key(redis: RedisConnection, queue: str, kind: str) -> str:
    """A queue's key of `kind` (ready, delayed, leased, dead, wake, lost): the name
    prelude.lua's qkey() builds, for the commands sent without a script (BLPOP)."""
    return redis.key(queue_tag(queue), f"q:{queue}:{kind}")


_PUBLISH = _lua("publish")
_CLAIM = _lua("claim").replace("$CHUNK", str(CHUNK))
_ACK = _lua("ack")
_RETRY = _lua("retry")
_DEAD_LETTER = _lua("dead_letter")
_RELEASE = _lua("release")
_EXTEND = _lua("extend")
_DEPTH = _lua("depth")
_STATS = _lua("stats")
_PURGE = _lua("purge").replace("$CHUNK", str(CHUNK))
_DEAD_LETTERS = _lua("dead_letters")
_SETTLE_DEAD = _lua("settle_dead").replace("$CHUNK", str(CHUNK))
_HEARTBEAT = _lua("heartbeat")
_WORKERS = _lua("workers")
_FORGET_WORKER = _lua("forget_worker")
_LEAVE = _lua("leave")
_STAY = _lua("stay")

#: `poison_reason` as a Lua format string, so burying a poison message stays one script
#: (the claim scripts' argument here and in the Celery bridge's kombu layout).
POISON_FORMAT = poison_reason(987654321).replace("%", "%%").replace("987654321", "%d")


class RedisBroker(Broker):
    """The broker on one server (or a Sentinel-watched master). Each script call names the
    hash tag of its keys (`tag=`), which only a Cluster uses (redis_cluster.py): a call
    about several deliveries or queues takes the tag of the first, and the Cluster broker
    makes such calls one tag at a time."""

    #: Whether it runs on a Cluster (redis_cluster.py), where queues' keys sit apart.
    on_cluster = False

    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        self.redis = RedisConnection(url)
        if self.redis.cluster != self.on_cluster:
            raise ConfigurationError(
                f"{type(self).__name__} does not take {self.redis.redacted}: the broker for a"
                " redis+cluster:// URL is RedisClusterBroker (brokers.from_url picks it)"
            )
        self.redis.require_schema("broker", SCHEMA_VERSION)
        self.prefix = self.redis.prefix
        self.max_deliveries = self.redis.options.get("max_deliveries", max_deliveries)
        script = self.redis.script
        self._publish = script(_PUBLISH, replicated="a publish")
        self._claim = script(_CLAIM)
        self._ack = script(_ACK, allow_oom=True, replicated="a settle")
        self._retry = script(_RETRY, allow_oom=True, replicated="a settle")
        self._dead_letter = script(_DEAD_LETTER, allow_oom=True, replicated="a settle")
        self._release = script(_RELEASE, allow_oom=True)
        self._extend = script(_EXTEND, allow_oom=True)
        self._depth = script(_DEPTH, allow_oom=True)
        self._stats = script(_STATS, allow_oom=True)
        self._purge = script(_PURGE, allow_oom=True)
        self._dead_letters = script(_DEAD_LETTERS, allow_oom=True)
        self._settle_dead = script(_SETTLE_DEAD, allow_oom=True)
        self._heartbeat = script(_HEARTBEAT, allow_oom=True)
        self._workers = script(_WORKERS, allow_oom=True)
        self._forget_worker = script(_FORGET_WORKER, allow_oom=True)
        self._leave = script(_LEAVE, allow_oom=True)
        self._stay = script(_STAY, allow_oom=True)
        #: Queues (as fetched together) -> monotonic time before which nothing of theirs
        #: is claimable unless a wake-up token comes (a fetch found nothing).
        self._quiet: dict[tuple[str, ...], float] = {}
        self._wait = Wait(self.redis)
        self._stranded = False
        #: After a wait that timed out, the monotonic time until which the next wait on
        #: the same queues (`Wait.queues`) may keep its ticket, which stands a while after
        #: the wait; 0 when none stands.
        self._stay_until = 0.0
        #: A Cluster's blocking calls go through redis-py's cluster client: not interrupted.
        self.interruptible = not self.on_cluster

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        # The tag only routes a Cluster's call: no regex per publish on one server.
        tag = queue_tag(queue) if self.on_cluster else ""
        (mid,) = self._publish(queue, body, delay if delay > 0 else 0, -int(priority), tag=tag)
        return str(mid.decode())

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        """Publish (queue, body, delay, priority) items, up to CHUNK per round trip."""
        ids: list[str] = []
        for start in range(0, len(items), CHUNK):
            args: list[object] = []
            for queue, body, delay, priority in items[start : start + CHUNK]:
                args += (queue, body, delay if delay > 0 else 0, -int(priority))
            ids += (i.decode() for i in self._publish(*args, tag=queue_tag(items[start][0])))
        return ids

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        """Claim; when nothing is claimable, wait for a message handed over or a wake-up
        (on a Cluster: a token), or for a delayed message or lease to fall due (see the
        module doc)."""
        if self._stranded:
            # A wait that did not outlast an outage: give back what was handed over
            # meanwhile, which would otherwise sit leased in the inbox.
            self._stranded = False
            self.leave()
        start = time.monotonic()
        deadline = start + timeout
        receipt = secrets.token_hex(8)
        args = (max(max_count, 1), lease, receipt, self.max_deliveries, POISON_FORMAT, *queues)
        key = tuple(queues)
        # A fetch that waits may skip its first claim when the last one found nothing: on
        # one server its wait claims first anyway; on a Cluster, until something falls
        # due (whatever arrived meanwhile pushed a token).
        quiet_until = self._quiet.pop(key, 0.0)
        quiet = timeout > 0 and (start < quiet_until or (quiet_until > 0 and not self.on_cluster))
        if not quiet and self._stay_until:
            self.leave()  # a fetch that claims without waiting: the ticket may still stand
        reply = None if quiet else self._claims(args)
        claimed = start  # when the claim that `reply` is from ran: its due time counts from then
        while reply is None or len(reply) == 1:
            now = time.monotonic()
            if reply is not None:
                due_in = reply[0] / 1000 if reply[0] >= 0 else math.inf
                quiet_until = claimed + min(due_in, IDLE_RECHECK)
            if now >= deadline or (reply is None and self._wait.interrupted()):
                self._quiet[key] = quiet_until
                return []
            longest = self.redis.max_block if self.on_cluster else self._wait.max_block
            wait = min(deadline - now, longest, quiet_until - now if quiet_until > now else longest)
            # Whole milliseconds, never 0: a blocking command reads 0 as "wait forever".
            block = max(math.ceil(wait * 1000), 1)
            if self.on_cluster:
                woken = self._sleep(queues, block / 1000)
                claimed = time.monotonic()
                reply = self._claims(args) if woken or claimed >= quiet_until else None
                continue
            stay = self._wait.queues == key and now < min(self._stay_until, quiet_until)
            claimed = now
            reply, handed = self._claim_or_wait(key, block, args, stay)
            if handed is not None:
                return [*_deliveries(reply, receipt), handed]
        return _deliveries(reply, receipt)

    def _claim_or_wait(
        self, queues: tuple[str, ...], block: int, args: tuple[object, ...], stay: bool
    ) -> tuple[list[Any] | None, Delivery | None]:
        """Claim, and if nothing was claimable, wait up to `block` ms on this process's
        inbox (redis_wait.py); or, to `stay`, keep the ticket the last wait left standing
        and wait without claiming (stay.lua). The claim's reply (None if none ran: a stay,
        or an `interrupt` that cut the wait short, and then this process waits no more),
        and the message handed over, if one was (one left in the inbox by a wait whose
        reply was lost comes out first, beside what the claim got)."""
        if self._wait.queues and self._wait.queues != queues:
            self.leave()  # the ticket still stands among other queues' waiters
        self._wait.queues = queues
        self._stranded = True  # until the wait's replies are read (see `fetch`)
        replies = self._wait.run(self._stay if stay else self._claim, block, () if stay else args)
        self._stranded = False
        if replies is None or (replies[1] is None and self._wait.cut()):
            self.leave()
            return None, None
        first, popped = replies
        # A claim's reply even when its wait timed out: its due time may be news (a delayed
        # message whose wake-up ended the wait before), which the waits that keep the
        # ticket, claiming nothing, must not outlast.
        claimed = None if stay else list(first)
        # Timed out, so nothing came: the ticket stands a while longer, for the next wait.
        self._stay_until = time.monotonic() + STAY if popped is None else 0.0
        if popped is None or not popped[1]:
            return claimed, None  # timed out; or claimed, or woken: claims if it waits on
        return claimed, _handed(popped[1])

    def leave(self, *, once: bool = False) -> None:
        """Stop waiting: take this process's ticket off its queues, and give back what was
        handed to it meanwhile (after a wait was cut short, or at close: `once`, a single
        try, since Redis may be gone)."""
        self._stay_until = 0.0
        if not self._wait.queues:
            return
        args = (self._wait.ticket, *self._wait.queues)
        left = self._leave.once(*args) if once else self._leave(*args)
        self._wait.queues = ()
        handed = [_handed(entry) for entry in left if entry]
        if handed:
            self.release(handed)

    def _claims(self, args: tuple[object, ...]) -> list[Any]:
        """The claim script's reply for `fetch`'s arguments (the queues last)."""
        return list(self._claim("", 0, *args, tag=queue_tag(str(args[5]))))

    def _sleep(self, queues: Sequence[str], block: float) -> object:
        """Block up to `block` seconds for a wake-up token of `queues` (on a Cluster); None
        if none came."""
        wake = [queue_key(self.redis, q, "wake") for q in queues]
        return self.redis.command("BLPOP", *wake, block)

    def interrupt(self) -> None:
        self._wait.interrupt()

    def ack(self, delivery: Delivery) -> bool:
        return self.ack_many([delivery])[0]

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """One script call per CHUNK deliveries.

        A call sent again after a lost connection may find its messages gone: the first
        try ran and its reply was lost. Those count as acked (the message is gone for
        good, which is what an ack asks); a first try that finds one gone was too late."""
        acked: list[bool] = []
        for start in range(0, len(deliveries), CHUNK):
            chunk = deliveries[start : start + CHUNK]
            reply, resent = self._ack.resent(*_pairs(chunk), tag=queue_tag(chunk[0].queue))
            acked += (n == 1 or (n == 2 and resent) for n in reply)
        return acked

    def ack_pipe(self, results: object) -> AckPipe | None:
        """Acks pipelined on a connection of their own; with them the records of a Redis
        result store on the same server (its `put_call`), in one transaction each."""
        put = getattr(results, "put_call", None)
        store = getattr(results, "redis", None)
        same = isinstance(store, RedisConnection) and store.server == self.redis.server
        if self.redis.wait_replicas:
            return None  # each settle WAITs for the replicas: no pipelining
        return RedisAckPipe(self.redis, self._ack, put if same else None)

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        args = (delivery.id, delivery.receipt, max(delay, 0), int(counted))
        return _settled(*self._retry.resent(*args, tag=queue_tag(delivery.queue)))

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        args = (delivery.id, delivery.receipt, reason)
        return _settled(*self._dead_letter.resent(*args, tag=queue_tag(delivery.queue)))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._release(*_pairs(deliveries), tag=queue_tag(deliveries[0].queue))

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        if not deliveries:
            return []
        flags = self._extend(lease, *_pairs(deliveries), tag=queue_tag(deliveries[0].queue))
        return [d for d, stale in zip(deliveries, flags, strict=True) if stale]

    def ping(self) -> None:
        """PING: on a Cluster, redis-py sends it to every node."""
        self.redis.command("PING")

    def depth(self, queue: str) -> int:
        return int(self._depth(queue, tag=queue_tag(queue)))

    def stats(self, queue: str) -> QueueStats:
        return QueueStats(*(int(n) for n in self._stats(queue, tag=queue_tag(queue))))

    def check(self) -> None:
        self.redis.check_server()

    def purge(self, queue: str) -> int:
        total = 0
        while True:
            dropped = int(self._purge(queue, tag=queue_tag(queue)))
            total += dropped
            if dropped < CHUNK:
                return total

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        reply = self._dead_letters(queue, limit, tag=queue_tag(queue))
        return [
            DeadLetter(
                rid.decode(), queue, body, reason.decode(), int(count), int(retries), float(t)
            )
            for rid, body, reason, count, retries, t in zip(*[iter(reply)] * 6, strict=True)
        ]

    def _settle_dead_letters(self, queue: str, requeue: bool, ids: Sequence[str] | None) -> int:
        flag, tag = int(requeue), queue_tag(queue)
        if ids is None:
            total = 0
            while True:
                moved = int(self._settle_dead(queue, flag, tag=tag))
                total += moved
                if moved < CHUNK:
                    return total
        return sum(
            int(self._settle_dead(queue, flag, *ids[i : i + CHUNK], tag=tag))
            for i in range(0, len(ids), CHUNK)
        )

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle_dead_letters(queue, True, ids)

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle_dead_letters(queue, False, ids)

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self._heartbeat(worker_id, info, max(math.ceil(ttl * 1000), 1), tag=WORKERS_TAG)

    def workers(self) -> dict[str, tuple[bytes, float]]:
        reply = self._workers(tag=WORKERS_TAG)
        return {
            wid.decode(): (info, float(seen))
            for wid, info, seen in zip(*[iter(reply)] * 3, strict=True)
        }

    def forget_worker(self, worker_id: str) -> None:
        self._forget_worker(worker_id, tag=WORKERS_TAG)

    def close(self) -> None:
        try:
            self.leave(once=True)
        except (redis.RedisError, BrokerUnavailable) as exc:
            # Its ticket expires with its wait; a message handed over comes back when its
            # lease lapses.
            log.info("could not stop waiting on %s: %s", self.redis.redacted, exc)
        self._wait.close()
        self.redis.close()


def _deliveries(reply: list[Any] | None, receipt: str) -> list[Delivery]:
    """The deliveries in a claim script's reply (after its first item)."""
    if reply is None:
        return []
    return [
        Delivery(rid.decode(), queue.decode(), body, count, retries, receipt)
        for rid, queue, body, count, retries in zip(*[iter(reply[1:])] * 5, strict=True)
    ]


def _handed(entry: bytes) -> Delivery:
    """A message a publish handed to this process's inbox:
    "<id> <receipt> <len(queue)> <queue><body>" (prelude.lua)."""
    rid, receipt, size, rest = entry.split(b" ", 3)
    n = int(size)
    return Delivery(rid.decode(), rest[:n].decode(), rest[n:], 1, 0, receipt.decode())


def _settled(reply: int, resent: bool) -> bool:
    """A retry or dead-letter script's reply: 1 done; 2 already settled and leased to
    nobody, which after a lost reply was this call's own earlier try (as for `ack_many`)."""
    return reply == 1 or (reply == 2 and resent)


def _pairs(deliveries: Sequence[Delivery]) -> list[object]:
    return [x for d in deliveries for x in (d.id, d.receipt)]
