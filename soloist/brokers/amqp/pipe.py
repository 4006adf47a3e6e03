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
        #: Each delivery sent, with the epoch of the channel its ack went out on (None:
        #: not held).
        self._sent: list[tuple[Delivery, int | None]] = []

    @property
    def pending(self) -> int:
        return len(self._sent)

    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        if record is not None:
            raise ValueError("RabbitMQ keeps no results: store the record first")

        receipt = delivery.receipt
        consumer = self.broker.consumer

        def here(s: Session) -> tuple[int | None, bool] | None:
            """On this thread (`Link.here`): (epoch or None if not held, sent whole), or
            None if it must go to the I/O thread."""
            if s.holds(receipt) is None:
                return None, True
            sent = consumer.ack_here(s, receipt[1])
            return None if sent is False else (s.epoch, bool(sent))

        def run(s: Session, _: Request) -> int | None:
            if written is not None:  # in part: the rest is sent now
                s.sub._flush_output()
                return written[0]
            if s.holds(receipt) is None:
                return None
            consumer.ack_now(s, receipt[1])
            return s.epoch

        link = self.broker._link
        written = None if link is None else link.here(here)
        epoch: int | None
        if written is not None and written[1]:
            epoch = written[0]
        else:
            try:
                epoch = self.broker._call(run, self.broker.publish_timeout)
            except (Down, BrokerUnavailable):
                epoch = None  # the connection went: the server gives the delivery back
        self._sent.append((delivery, epoch))

    def collect(self) -> list[bool]:
        sent, self._sent = self._sent, []
        if all(epoch is None for _, epoch in sent):
            return [False] * len(sent)

        def run(s: Session, _: Request) -> int:
            self.broker.consumer.confirm_acks(s)
            return s.epoch

        try:
            confirmed: int | None = self.broker._call(run, self.broker.publish_timeout)
        except (Down, BrokerUnavailable):
            confirmed = None
        # Acks written on a channel that is gone since (the connection dropped, or the
        # server closed the channel and it was reopened) were dropped with it.
        return [epoch is not None and epoch == confirmed for _, epoch in sent]

    def close(self) -> None:
        self._sent = []
