"""A broker in kombu's Redis layout, so Celery producers and workers share its queues.

The scripts are the .lua files in celery/broker/; prelude.lua opens with the key schema.

Celery's producers LPUSH; this broker pops from the right, like kombu's BRPOP, and moves
each message into kombu's `unacked` hash and `unacked_index` in the same Lua script, so a
message is never only in a worker's memory (kombu's own BRPOP-then-record has that gap).

Differences from the Soloist layout, by necessity:

* An idle fetch blocks with BLMOVE from the first list to itself (it waits until the
  list is not empty and leaves it as it was), then claims in the same round trip. Other
  lists (priority steps, other queues) are looked at every `MULTI_LIST_POLL` seconds.
* A message whose ETA is in the future is parked: it stays in kombu's unacked hash with
  its lease set to end at the ETA, and is restored to its list then, by whichever worker
  (Soloist or Celery) looks first. Celery's own workers hold ETA messages in memory.
* A retry is a new message: Celery's `Task.retry()` publishes it (with its retries count
  and ETA) before raising, as on Celery's worker, so `retry` here settles the old one as
  an ack does.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..brokers.base import (
    DEFAULT_MAX_DELIVERIES,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
)
from ..brokers.redis import POISON_FORMAT, RedisBroker
from ..brokers.redis_connection import RedisConnection
from ..brokers.redis_script import _lua as lua
from ..errors import ConfigurationError
from . import protocol

#: kombu's separator between a queue's name and its priority step.
SEP = "\x06\x16"
#: kombu's defaults (transport options `priority_steps`, `visibility_timeout`).
PRIORITY_STEPS = (0, 3, 6, 9)
VISIBILITY_TIMEOUT = 3600.0
#: How often an idle fetch looks at the lists it cannot block on.
MULTI_LIST_POLL = 0.2
#: A message due within this many seconds is handed out, not parked.
ETA_SLACK = 0.01

#: The Lua scripts, one file each in celery/broker/. prelude.lua, which runs before each
#: of them (after Soloist's brokers/redis/prelude.lua), opens with the key schema.
_LUA = Path(__file__).with_name("broker")


def _lua(name: str) -> str:
    return lua(name, _LUA)


_PRELUDE = _lua("prelude")
_RESTORE = _lua("restore")
_CLAIM = _lua("claim")
_ACK = _lua("ack")
_EXTEND = _lua("extend")
_RELEASE = _lua("release")
_PARK = _lua("park")
_DEAD_LETTER = _lua("dead_letter")
_DEPTH = _lua("depth")
_PURGE = _lua("purge")
_DEAD_LETTERS = _lua("dead_letters")
_SETTLE_DEAD = _lua("settle_dead")


class KombuRedisBroker(Broker):
    """Soloist's broker contract over kombu's Redis layout (its key schema opens
    celery/broker/prelude.lua).

    The URL is Celery's broker URL with `celery+` before its scheme, and kombu's transport
    options in its query: `global_keyprefix`, `visibility_timeout`, `priority_steps`
    (comma-separated), besides Soloist's `max_deliveries` and redis-py's options.
    """

    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        parts = urlsplit(url)
        if not parts.scheme.startswith("celery+"):
            raise ConfigurationError(f"not a celery+redis:// URL: {parts.scheme}://…")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.prefix = query.pop("global_keyprefix", "")
        try:
            self.visibility_timeout = float(query.pop("visibility_timeout", VISIBILITY_TIMEOUT))
            steps = query.pop("priority_steps", "")
            self.steps = tuple(int(s) for s in steps.split(",")) if steps else PRIORITY_STEPS
            self.max_deliveries = int(query.pop("max_deliveries", max_deliveries))
        except ValueError as exc:
            raise ConfigurationError(f"bad option in a celery+redis URL: {exc}") from None
        base = parts._replace(scheme=parts.scheme[len("celery+") :])
        self.redis = RedisConnection(urlunsplit(base._replace(query=urlencode(query))))
        self.redis.prefix = self.prefix  # before any script is made: they pass it to Lua
        #: Heartbeats and the worker registry, in Soloist's own keys under the prefix.
        registry = urlencode({**query, "prefix": f"{self.prefix}soloist:"})
        self.registry = RedisBroker(urlunsplit(base._replace(query=registry)))
        script = self.redis.script
        self._claim = script(_PRELUDE + _RESTORE + _CLAIM)
        self._ack = script(_PRELUDE + _ACK)
        self._extend = script(_PRELUDE + _EXTEND)
        self._release = script(_PRELUDE + _RELEASE)
        self._park = script(_PRELUDE + _PARK)
        self._dead_letter = script(_PRELUDE + _DEAD_LETTER)
        self._depth = script(_DEPTH)
        self._purge = script(_PURGE)
        self._dead_letters = script(_PRELUDE + _DEAD_LETTERS)
        self._settle_dead = script(_PRELUDE + _SETTLE_DEAD)

    def lists(self, queues: Sequence[str]) -> list[tuple[str, str]]:
        """(list, queue) in the order kombu serves them: by priority step, then queue."""
        return [(q if s == 0 else f"{q}{SEP}{s}", q) for s in self.steps for q in queues]

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        """Push a ready kombu message (its delivery tag is its id); Celery's producers are
        the usual publishers, this serves Soloist's own tools (requeueing, tests)."""
        if delay > 0:
            raise ConfigurationError("kombu's Redis layout has no delayed messages: use an ETA")
        step = max([s for s in self.steps if s <= priority] or [0])
        key = self.prefix + (queue if step == 0 else f"{queue}{SEP}{step}")
        self.redis.command("LPUSH", key, body)
        return str(protocol.envelope(body)["properties"].get("delivery_tag", ""))

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        receipt = secrets.token_hex(8)
        lists = self.lists(queues)
        steps = ",".join(str(s) for s in self.steps)
        args = (
            max(max_count, 1),
            lease,
            receipt,
            self.max_deliveries,
            POISON_FORMAT,
            self.visibility_timeout,
            steps,
            *(x for pair in lists for x in pair),
        )
        reply = self._claim(*args)
        while len(reply) == 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            due_in = reply[0]
            wait = min(remaining, self.redis.max_block, math.inf if due_in < 0 else due_in / 1000)
            if len(lists) > 1:
                wait = min(wait, MULTI_LIST_POLL)
            block = max(math.ceil(wait * 1000), 1) / 1000
            first = self.prefix + lists[0][0]
            # BLMOVE from a list to itself waits until it has a message and leaves it in
            # place; the claim runs the moment it returns, in the same round trip.
            reply = self._claim.after(("BLMOVE", first, first, "RIGHT", "RIGHT", block), *args)
        got = [
            Delivery(tag.decode(), queue.decode(), text, int(count), 0, receipt)
            for tag, queue, text, count in zip(*[iter(reply[1:])] * 4, strict=True)
        ]
        return self._park_early(got)

    def _park_early(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Park the deliveries whose ETA is not due yet; return the others."""
        now = time.time()
        ready: list[Delivery] = []
        parked: list[object] = []
        for d in deliveries:
            eta = protocol.eta_of(d.body)
            if eta is not None and eta > now + ETA_SLACK:
                parked += (d.id, d.receipt, eta)
            else:
                ready.append(d)
        if parked:
            self._park(self.visibility_timeout, *parked)
        return ready

    def ack(self, delivery: Delivery) -> bool:
        return self.ack_many([delivery])[0]

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        if not deliveries:
            return []
        return [bool(n) for n in self._ack(*_pairs(deliveries))]

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        """Celery's `Task.retry()` already published the retry: settle this one. A task
        deferred by a Soloist limit (`counted=False`) is given back at once instead."""
        if not counted:
            self.release([delivery])
            return True
        return self.ack(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return bool(self._dead_letter(delivery.id, delivery.receipt, reason))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._release(*_pairs(deliveries))

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        if not deliveries:
            return []
        flags = self._extend(lease, self.visibility_timeout, *_pairs(deliveries))
        return [d for d, stale in zip(deliveries, flags, strict=True) if stale]

    def ping(self) -> None:
        self.redis.command("PING")

    def depth(self, queue: str) -> int:
        return int(self._depth(*(name for name, _ in self.lists([queue]))))

    def stats(self, queue: str) -> QueueStats:
        dead = int(self.redis.command("ZCARD", f"{self.prefix}{queue}{SEP}soloist.dead"))
        return QueueStats(self.depth(queue), dead=dead)

    def purge(self, queue: str) -> int:
        return int(self._purge(queue, *(name for name, _ in self.lists([queue]))))

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        reply = self._dead_letters(queue, limit)
        return [
            DeadLetter(tag.decode(), queue, body, why.decode(), int(n), 0, float(t))
            for tag, body, why, n, t in zip(*[iter(reply)] * 5, strict=True)
        ]

    def _settle(self, queue: str, requeue: bool, ids: Sequence[str] | None) -> int:
        if ids is None:
            total = 0
            while moved := int(self._settle_dead(queue, int(requeue))):
                total += moved
            return total
        return int(self._settle_dead(queue, int(requeue), *ids)) if ids else 0

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle(queue, True, ids)

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle(queue, False, ids)

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self.registry.heartbeat(worker_id, info, ttl)

    def workers(self) -> dict[str, tuple[bytes, float]]:
        return self.registry.workers()

    def forget_worker(self, worker_id: str) -> None:
        self.registry.forget_worker(worker_id)

    def close(self) -> None:
        self.registry.close()
        self.redis.close()


def broker_url(url: str, options: dict[str, object]) -> str:
    """The celery+redis URL of a Celery broker URL and its transport options."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name in ("global_keyprefix", "visibility_timeout"):
        if options.get(name) is not None:
            query[name] = str(options[name])
    if options.get("priority_steps"):
        steps = options["priority_steps"]
        assert isinstance(steps, (list, tuple))
        query["priority_steps"] = ",".join(str(s) for s in steps)
    query_text = urlencode(query, quote_via=quote)
    return urlunsplit(parts._replace(scheme=f"celery+{parts.scheme}", query=query_text))


def _pairs(deliveries: Sequence[Delivery]) -> list[object]:
    return [x for d in deliveries for x in (d.id, d.receipt)]
