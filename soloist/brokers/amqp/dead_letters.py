"""The dead-letter store ``Q.dead``: listing, requeueing and dropping its messages,
browsed under the cross-process lock (browse.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from ..base import DeadLetter, poison_reason
from .browse import browse, locked
from .session import Session
from .topology import Topology
from .wire import H_COUNT, H_DEAD_AT, H_PRIOR, H_REASON, H_RETRIES, Out

#: Dead letters requeued or dropped per transaction.
PICK_BATCH = 500


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
        """Requeue (retry count reset) or drop the dead letters `ids` (all if None).

        A requeued letter's copy and the ack of the letter go in one transaction of the
        browsing channel (a commit every PICK_BATCH letters), so an operator killed midway
        leaves each letter dead or requeued, never both (requeued again later, it would
        run twice)."""
        wanted = None if ids is None else set(ids)
        self.topology.declare(s, queue)
        done = 0
        with locked(s, f"{queue}.dead", self.timeout, transactional=True) as ch:
            s.watch(ch)
            outs: list[Out] = []
            for tag, props, body in browse(ch, f"{queue}.dead", 1_000_000):
                if wanted is not None and props.message_id not in wanted:
                    continue  # goes back to the store when the lock is released
                if requeue:
                    headers = {
                        k: v for k, v in (props.headers or {}).items() if not k.startswith("x-")
                    }
                    headers[H_RETRIES] = 0
                    out = Out(queue, queue, body, props.message_id or "", headers)
                    ch.basic_publish(
                        "", self.topology.target(s, out), body, self.topology.props(out),
                        mandatory=True,
                    )  # fmt: skip
                    outs.append(out)
                ch.basic_ack(tag)
                done += 1
                if done % PICK_BATCH == 0:
                    self.commit(s, ch, outs)
            self.commit(s, ch, outs)
        return done

    def commit(self, s: Session, ch: BlockingChannel, outs: list[Out]) -> None:
        """Commit the picks so far. A lane deleted since it was declared returns its
        copy before the commit-ok: that copy is declared again and sent on its own."""
        s.returned.clear()
        ch.tx_commit()
        s.conn.process_data_events(time_limit=0)  # dispatch the returns
        for out in outs:
            if out.message_id in s.returned:
                self.topology.send(s, out)
        outs.clear()

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
