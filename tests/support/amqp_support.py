"""Helpers for tests on RabbitMQ: brokers that remove the queues their test made.

Quorum queues each hold file handles on the server for as long as they exist, and the
server is shared, so a test deletes its topology when its brokers close rather than
leaving it to expire.
"""

from __future__ import annotations

from soloist.brokers.amqp import AMQPBroker
from soloist.brokers.amqp.session import Session
from soloist.brokers.base import DEFAULT_MAX_DELIVERIES
from tests.support.servers import AMQP_URL


def amqp_url(base: str = AMQP_URL, **options: object) -> str:
    """`base` with query options added."""
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{base}{'&' if '?' in base else '?'}{query}" if query else base


class DeletingAMQPBroker(AMQPBroker):
    """An AMQP broker that deletes every queue it declared when closed.

    `die()` is the plain close: the connection goes, as when a worker dies, and the
    queues stay for the rest of the test.
    """

    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        super().__init__(url, max_deliveries)
        self.used: set[str] = set()
        declare = self.topology.declare

        def tracked(s: Session, queue: str) -> None:
            self.used.add(queue)
            declare(s, queue)

        self.topology.declare = tracked  # type: ignore[method-assign]

    def die(self) -> None:
        super().close()

    def close(self) -> None:
        for queue in sorted(self.used):
            self.delete(queue)
        super().close()
