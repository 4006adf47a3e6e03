"""Broker.ping on a server nothing listens on: BrokerUnavailable at once, naming the
server without its password (the contract suite checks it answers on a live one)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from soloist.brokers import from_url
from soloist.errors import BrokerUnavailable
from tests.support.redis_support import refusing_port

#: An unreachable URL of each broker with a server, and what its error says.
UNREACHABLE: dict[str, tuple[Callable[[int], str], str]] = {
    "redis": (lambda port: f"redis://:s3cret@127.0.0.1:{port}/0", "cannot reach Redis"),
    "redis-sentinel": (
        lambda port: f"redis+sentinel://:s3cret@127.0.0.1:{port}/mymaster/0",
        "cannot reach Redis",
    ),
    "redis-cluster": (
        lambda port: f"redis+cluster://:s3cret@127.0.0.1:{port}/",
        "cannot reach Redis",
    ),
    "amqp": (lambda port: f"amqp://guest:s3cret@127.0.0.1:{port}/", "cannot connect to RabbitMQ"),
    "celery-redis": (
        lambda port: f"celery+redis://:s3cret@127.0.0.1:{port}/0",
        "cannot reach Redis",
    ),
    "celery-amqp": (
        lambda port: f"celery+amqp://guest:s3cret@127.0.0.1:{port}//",
        "cannot reach RabbitMQ",
    ),
}


@pytest.mark.parametrize("kind", list(UNREACHABLE))
def test_ping_fails_clearly_on_an_unreachable_server(kind: str) -> None:
    if kind.startswith("celery"):
        pytest.importorskip("kombu")
    url, says = UNREACHABLE[kind]
    with refusing_port() as port:
        broker = from_url(url(port))
        try:
            with pytest.raises(BrokerUnavailable, match=says) as caught:
                broker.ping()
        finally:
            broker.close()
    assert "s3cret" not in str(caught.value) and "127.0.0.1" in str(caught.value)
