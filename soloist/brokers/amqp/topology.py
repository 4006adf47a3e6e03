"""Queue topology: the lanes of a logical queue (one per priority), its dead-letter store,
the delay queues in front of its lanes, and publishing a message to where it belongs."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions as pe

from .session import Session
from .wire import Out, bucket_ms

log = logging.getLogger("soloist.brokers.amqp")


class Topology:
    """Names and declares the queues of this broker's logical queues, and publishes to them.
    Declarations go on the publishing channel, once per connection."""

    def __init__(self, max_deliveries: int, max_priority: int, queue_expires: float) -> None:
        self.max_deliveries = max_deliveries
        self.max_priority = max_priority
        self.queue_expires = queue_expires
        self.delay_queues: dict[str, set[str]] = {}  # queue -> delay queues used
        self._warned_priority = False

    def lanes(self, queue: str) -> list[str]:
        """The work queues of `queue`, highest priority first."""
        return [self.lane(queue, p) for p in range(self.max_priority, -1, -1)]

    def lane(self, queue: str, priority: int) -> str:
        if priority and not self.max_priority and not self._warned_priority:
            log.warning("priority ignored: add ?max_priority=N to the AMQP URL to use it")
            self._warned_priority = True
        p = min(max(priority, 0), self.max_priority)
        return queue if p == 0 else f"{queue}.p{p}"

    def expiring(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.queue_expires:
            args["x-expires"] = int(self.queue_expires * 1000)
        return args

    def work_args(self, queue: str) -> dict[str, Any]:
        return self.expiring(
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.max_deliveries - 1,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{queue}.dead",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        )

    def declare(self, s: Session, queue: str) -> None:
        """Declare `queue`'s lanes and dead-letter store, once per connection."""
        if queue in s.declared:
            return
        s.pub.queue_declare(
            f"{queue}.dead", durable=True, arguments=self.expiring({"x-queue-type": "quorum"})
        )
        for lane in self.lanes(queue):
            s.pub.queue_declare(lane, durable=True, arguments=self.work_args(queue))
        s.declared[queue] = time.monotonic()

    def declare_delay(self, s: Session, queue: str, lane: str, ms: int) -> str:
        name = f"{lane}.delay.{ms}"
        # The queue expires 2*ms + 60 s after its last declaration. Re-declaring when ours
        # is older than ms + 30 s means a message published now expires into its lane
        # (after ms) well before the queue itself can expire.
        if time.monotonic() - s.declared.get(name, -math.inf) > ms / 1000 + 30:
            s.pub.queue_declare(
                name,
                durable=True,
                arguments={
                    "x-message-ttl": ms,
                    "x-expires": 2 * ms + 60_000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": lane,
                },
            )
            s.declared[name] = time.monotonic()
            self.delay_queues.setdefault(queue, set()).add(name)
        return name

    def target(self, s: Session, out: Out) -> str:
        """The queue to publish `out` to: its lane, or a delay queue in front of it."""
        self.declare(s, out.queue)
        if out.delay <= 0:
            return out.lane
        return self.declare_delay(s, out.queue, out.lane, bucket_ms(out.delay))

    @staticmethod
    def props(out: Out) -> pika.BasicProperties:
        return pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=out.message_id,
            timestamp=int(time.time()),
            # None, not an empty table, for a new message: a missing count reads as 0, and
            # consumers then decode no header table.
            headers=out.headers or None,
        )

    def send(self, s: Session, out: Out) -> None:
        """Publish and wait for the confirm."""
        target = self.target(s, out)
        try:
            s.pub.basic_publish("", target, out.body, self.props(out), mandatory=True)
        except pe.UnroutableError:
            # The queue was deleted (by an operator, or a delay queue expired) after we
            # declared it on this connection: declare again and publish once more.
            s.declared.pop(out.queue, None)
            s.declared.pop(target, None)
            s.pub.basic_publish(
                "", self.target(s, out), out.body, self.props(out), mandatory=True
            )

    def send_many(self, s: Session, outs: Sequence[Out]) -> None:
        """Publish in one transaction: one round trip for the batch, durable once the
        commit returns (RabbitMQ answers a commit once the queues confirmed every message)."""
        if len(outs) == 1:
            self.send(s, outs[0])
            return
        targets = [self.target(s, out) for out in outs]
        tx = s.transacting()
        s.returned.clear()
        for out, target in zip(outs, targets, strict=True):
            tx.basic_publish("", target, out.body, self.props(out), mandatory=True)
        tx.tx_commit()
        # A queue deleted since we declared it returns the message, before the commit-ok;
        # this dispatches those returns. _send declares it again.
        s.conn.process_data_events(time_limit=0)
        for out in outs:
            if out.message_id in s.returned:
                self.send(s, out)

    def delays(self, queue: str) -> list[str]:
        return sorted(self.delay_queues.get(queue, ()))
