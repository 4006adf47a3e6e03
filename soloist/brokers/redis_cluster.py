"""The Redis broker on a Redis Cluster: `redis+cluster://h1:7000,h2:7001/`.

Each queue's keys carry the queue's hash tag (cluster.py), so every script the broker runs
touches one slot, and queues spread over the shards. What spans several queues is split:

- Message ids count per queue (the counter lives with the queue), so an id here is
  `<queue>:<number>`, unique across queues; the scripts see the number.
- A fetch over queues of several tags claims tag by tag, in the order of the queues
  (consecutive queues of one tag, as `{mail}high, {mail}low`, in one script call), until
  it has enough. A message back from a lapsed lease still goes out alone: one that a
  later claim hands out beside others is released again at once.
- An idle fetch over one tag blocks on its queues' wake lists as on one server. Over
  several it blocks on one tag's wake lists at a time, CROSS_SLOT_WAIT seconds each in
  turn (BLPOP cannot wait on keys of several slots), so a message on another tag's queue
  waits up to that long times the other tags: give queues fetched together one tag.
- Acks, releases, lease renewals and publishes go out one call per tag; the ack pipe
  holds a link per node and carries no result records (redis_pipe.py).

The worker registry lives on one shard (tag `workers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from .base import AckPipe, DeadLetter, Delivery
from .cluster import queue_tag
from .redis import RedisBroker
from .redis_pipe import RedisAckPipe

T = TypeVar("T")
Item = TypeVar("Item")

#: An idle fetch over queues of several tags blocks this long on each tag's wake lists in
#: turn: the most a wake-up is late per other tag.
CROSS_SLOT_WAIT = 0.2


class RedisClusterBroker(RedisBroker):
    on_cluster = True
    _turn = 0  # which tag an idle fetch over several blocks on next

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        return _public(queue, super().publish(queue, body, delay=delay, priority=priority))

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        def publish(group: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
            return [
                _public(item[0], i) for item, i in zip(group, super_publish(group), strict=True)
            ]

        super_publish = super().publish_many
        return _by_tag(items, lambda item: item[0], publish)

    def _claims(self, args: tuple[object, ...]) -> list[Any]:
        """Claim tag by tag in the queues' order (see the module doc); the reply as one
        script's, with the ids made public."""
        want = int(str(args[0]))
        out: list[Any] = []
        due: list[int] = []
        for queues in _runs([str(q) for q in args[5:]]):
            tag = queue_tag(queues[0])
            reply = self._claim("", 0, want - len(out) // 5, *args[1:5], *queues, tag=tag)
            if len(reply) == 1:
                if reply[0] >= 0:
                    due.append(reply[0])
                continue
            if out and reply[4] > 1:
                # Back from a lapsed lease, beside what earlier tags gave: not in a batch.
                self._release(reply[1], args[2], tag=tag)
                break
            for k in range(1, len(reply), 5):
                reply[k] = _public(reply[2].decode(), reply[k].decode()).encode()
            out += reply[1:]
            if len(out) // 5 >= want or reply[4] > 1:
                break
        return [0, *out] if out else [min(due, default=-1)]

    def _sleep(self, queues: Sequence[str], block: float) -> object:
        tags = list(dict.fromkeys(queue_tag(q) for q in queues))
        if len(tags) > 1:
            tag = tags[self._turn % len(tags)]
            self._turn += 1
            queues = [q for q in queues if queue_tag(q) == tag]
            block = min(block, CROSS_SLOT_WAIT)
        return super()._sleep(queues, block)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return _by_tag(_raw(deliveries), _queue, super().ack_many)

    def ack_pipe(self, results: object) -> AckPipe | None:
        """Acks pipelined on a link per node; no records with them (redis_pipe.py)."""
        return _ClusterAckPipe(self.redis, self._ack, None)

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        return super().retry(_raw([delivery])[0], delay, counted=counted)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return super().dead_letter(_raw([delivery])[0], reason)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        def release(group: Sequence[Delivery]) -> list[None]:
            super_release(group)
            return [None] * len(group)

        super_release = super().release
        _by_tag(_raw(deliveries), _queue, release)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        def extend(group: Sequence[Delivery]) -> list[bool]:
            stale = {d.id for d in super_extend(group, lease)}
            return [d.id in stale for d in group]

        super_extend = super().extend
        flags = _by_tag(_raw(deliveries), _queue, extend)
        return [d for d, stale in zip(deliveries, flags, strict=True) if stale]

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return [replace(d, id=_public(queue, d.id)) for d in super().dead_letters(queue, limit)]

    def _settle_dead_letters(self, queue: str, requeue: bool, ids: Sequence[str] | None) -> int:
        # Only this queue's: another queue's counter gives its messages the same numbers.
        raw = None if ids is None else [n for q, _, n in map(_split, ids) if q == queue]
        return super()._settle_dead_letters(queue, requeue, raw)


class _ClusterAckPipe(RedisAckPipe):
    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        super().send(_raw([delivery])[0], record, ttl)


def _public(queue: str, raw: str) -> str:
    """A message's id outside the scripts: its queue's counter is the queue's own."""
    return f"{queue}:{raw}"


def _split(public: str) -> tuple[str, str, str]:
    return public.rpartition(":")


def _raw(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """The deliveries with the ids the scripts know."""
    return [d._replace(id=d.id.rpartition(":")[2]) for d in deliveries]


def _queue(delivery: Delivery) -> str:
    return delivery.queue


def _runs(queues: list[str]) -> list[list[str]]:
    """`queues` in runs of consecutive queues of one tag, in order."""
    runs: list[list[str]] = []
    for queue in queues:
        if runs and queue_tag(runs[-1][0]) == queue_tag(queue):
            runs[-1].append(queue)
        else:
            runs.append([queue])
    return runs


def _by_tag(
    items: Sequence[Item], queue_of: Callable[[Item], str], run: Callable[[Sequence[Item]], list[T]]
) -> list[T]:
    """`run` on the items of each tag, in their order; its replies (one per item) put
    back in the items' order."""
    groups: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        groups.setdefault(queue_tag(queue_of(item)), []).append(n)
    out: list[T | None] = [None] * len(items)
    for positions in groups.values():
        for n, reply in zip(positions, run([items[n] for n in positions]), strict=True):
            out[n] = reply
    return out  # type: ignore[return-value]
