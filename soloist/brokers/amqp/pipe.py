"""`AMQPBroker.ack_pipe`: acks written as each task ends, confirmed together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import BrokerUnavailable
from ..base import AckPipe, Delivery
from .session import Down, Request, Session

if TYPE_CHECKING:
    from .broker import AMQPBroker


class AMQPAckPipe(AckPipe):
    """Acks only (RabbitMQ keeps no results). basic.ack has no reply: each ack is written
    as its task ends, and the round trip that confirms the server processed them waits
    for `collect`."""

    def __init__(self, broker: AMQPBroker) -> None:
        self.broker = broker
        #: Each delivery sent, with the session its ack went out on (None: not held).
        self._sent: list[tuple[Delivery, Session | None]] = []

    @property
    def pending(self) -> int:
        return len(self._sent)

    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        if record is not None:
            raise ValueError("RabbitMQ keeps no results: store the record first")

        def run(s: Session, _: Request) -> Session | None:
            if s.holds(delivery.receipt) is None:
                return None
            self.broker.consumer.ack_tags(s, [delivery.receipt[1]])  # written to the socket
            return s

        try:
            session = self.broker._call(run, self.broker.publish_timeout)
        except (Down, BrokerUnavailable):
            session = None  # the connection went: the server gives the delivery back
        self._sent.append((delivery, session))

    def collect(self) -> list[bool]:
        sent, self._sent = self._sent, []
        sessions = {id(s) for _, s in sent if s is not None}
        if not sessions:
            return [False] * len(sent)

        def run(s: Session, _: Request) -> Session:
            self.broker.consumer.confirm_acks(s)
            return s

        try:
            confirmed: Session | None = self.broker._call(run, self.broker.publish_timeout)
        except (Down, BrokerUnavailable):
            confirmed = None
        # Acks written on a connection that is gone since were dropped with it.
        return [s is not None and s is confirmed for _, s in sent]

    def close(self) -> None:
        self._sent = []
