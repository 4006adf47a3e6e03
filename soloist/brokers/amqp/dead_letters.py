"""The dead-letter store ``Q.dead``: listing, requeueing and dropping its messages,
browsed under the cross-process lock (browse.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base import DeadLetter, poison_reason
from .browse import browse, locked
from .session import Session
from .topology import Topology
from .wire import H_COUNT, H_DEAD_AT, H_PRIOR, H_REASON, H_RETRIES, Out


class DeadLetterStore:
    """Runs on the I/O thread; `timeout` bounds the wait for another browser's lock."""

    def __init__(self, topology: Topology, timeout: float) -> None:
        self.topology = topology
        self.timeout = timeout

    def read(self, s: Session, queue: str, limit: int) -> list[DeadLetter]:
        self.topology.declare(s, queue)
        with locked(s, f"{queue}.dead", self.timeout) as ch:
            return [
                self.decode(queue, props, body)
                for _, props, body in browse(ch, f"{queue}.dead", limit)
            ]

    def pick(self, s: Session, queue: str, ids: Sequence[str] | None, requeue: bool) -> int:
        """Requeue (retry count reset) or drop the dead letters `ids` (all if None)."""
        wanted = None if ids is None else set(ids)
        self.topology.declare(s, queue)
        done = 0
        with locked(s, f"{queue}.dead", self.timeout) as ch:
            for tag, props, body in browse(ch, f"{queue}.dead", 1_000_000):
                if wanted is not None and props.message_id not in wanted:
                    continue  # goes back to the store when the lock is released
                if requeue:
                    headers = {
                        k: v for k, v in (props.headers or {}).items() if not k.startswith("x-")
                    }
                    headers[H_RETRIES] = 0
                    out = Out(queue, queue, body, props.message_id or "", headers)
                    self.topology.send(s, out)
                ch.basic_ack(tag)
                done += 1
        return done

    def decode(self, queue: str, props: Any, body: bytes) -> DeadLetter:
        h = props.headers or {}
        reason = h.get(H_REASON)
        count = int(h.get(H_COUNT, 0))
        if reason is None:  # dead-lettered by the queue itself: its delivery limit
            count = int(h.get(H_PRIOR, 0)) + self.topology.max_deliveries
            reason = poison_reason(count)
            deaths = h.get("x-death") or [{}]
            dead_at = deaths[0]["time"].timestamp() if "time" in deaths[0] else 0.0
        else:
            dead_at = float(h.get(H_DEAD_AT, 0))
        return DeadLetter(
            props.message_id or "",
            queue,
            body,
            str(reason),
            count,
            int(h.get(H_RETRIES, 0)),
            dead_at,
        )
