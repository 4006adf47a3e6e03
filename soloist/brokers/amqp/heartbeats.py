"""The heartbeat queue ``soloist.workers``: one message per beat that expires after its
ttl, a tombstone for a forgotten worker, and the browse that keeps the newest per worker."""

from __future__ import annotations

import time
from typing import Any

import pika

from .browse import browse, locked
from .session import Session
from .wire import H_GONE, H_SEEN, H_TTL, H_WORKER, WORKERS_QUEUE

#: A forgotten worker's tombstone outlives heartbeats of an unknown ttl this long.
TOMBSTONE_TTL = 3600.0


def beat_properties(worker_id: str, ttl: float, gone: bool = False) -> pika.BasicProperties:
    """The properties of one beat (or of a tombstone, `gone`), stamped now."""
    headers = {
        H_WORKER: worker_id,
        H_SEEN: repr(time.time()),
        H_TTL: repr(ttl),
        H_GONE: int(gone),
    }
    return pika.BasicProperties(
        message_id=worker_id, expiration=str(max(1, int(ttl * 1000))), headers=headers
    )


def declare(s: Session) -> None:
    if WORKERS_QUEUE not in s.declared:
        s.pub.queue_declare(WORKERS_QUEUE, durable=False)
        s.declared[WORKERS_QUEUE] = time.monotonic()


def send(s: Session, info: bytes, props: pika.BasicProperties) -> None:
    declare(s)
    s.pub.basic_publish("", WORKERS_QUEUE, info, props, mandatory=True)


def alive(s: Session, timeout: float) -> dict[str, tuple[bytes, float]]:
    """Each live worker's newest beat: (info, seen). Superseded, expired and tombstoned
    beats are acked on the way (messages cannot be deleted from the middle of a queue)."""
    declare(s)
    newest: dict[str, tuple[float, int, Any, bytes]] = {}
    with locked(s, WORKERS_QUEUE, timeout) as ch:
        for tag, props, body in browse(ch, WORKERS_QUEUE, 100_000):
            h = props.headers or {}
            wid, seen = str(h.get(H_WORKER, "")), float(h.get(H_SEEN, 0))
            old = newest.get(wid)
            if old is not None and old[0] > seen:
                ch.basic_ack(tag)  # superseded: compact the queue
                continue
            if old is not None:
                ch.basic_ack(old[1])
            newest[wid] = (seen, tag, h, body)
        now = time.time()
        live = {}
        for wid, (seen, tag, h, body) in newest.items():
            if h.get(H_GONE) or seen + float(h.get(H_TTL, 0)) < now:
                ch.basic_ack(tag)
            else:
                live[wid] = (body, seen)
    return live
