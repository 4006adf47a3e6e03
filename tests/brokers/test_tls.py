"""TLS: rediss:// reaches a TLS server whose self-signed CA the URL names; a wrong CA is a
clear error. (The TLS server is a TLS front, in the tests, to the local plain servers.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist.errors import BrokerUnavailable
from tests.support.netfaults import FaultyProxy
from tests.support.redis_support import FlushingRedisBroker, prefixed_url
from tests.support.servers import require
from tests.support.tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def redis_tls(certs: Certificates) -> Iterator[int]:
    require("Redis", "127.0.0.1", 6379)
    proxy = FaultyProxy(("127.0.0.1", 6379), tls=certs.server_context())
    yield proxy.port
    proxy.close()


def rediss_url(port: int, ca: Path) -> str:
    base = f"rediss://127.0.0.1:{port}/15"
    return prefixed_url(f"soloist-tls-{uuid.uuid4().hex[:8]}:", base, ssl_ca_certs=ca)


def test_rediss_with_the_right_ca(redis_tls: int, certs: Certificates) -> None:
    broker = FlushingRedisBroker(rediss_url(redis_tls, certs.ca))
    try:
        broker.publish("q", b"over tls")
        (delivery,) = broker.fetch(["q"], 1, 5, 2)
        assert delivery.body == b"over tls" and broker.ack(delivery)
    finally:
        broker.close()


def test_rediss_with_a_wrong_ca_fails_clearly(redis_tls: int, certs: Certificates) -> None:
    from soloist.brokers.redis import RedisBroker

    broker = RedisBroker(rediss_url(redis_tls, certs.other_ca))
    with pytest.raises(BrokerUnavailable, match="certificate verify failed"):
        broker.publish("q", b"x")


@pytest.fixture
def amqp_tls(certs: Certificates) -> Iterator[int]:
    require("RabbitMQ", "127.0.0.1", 5672)
    proxy = FaultyProxy(("127.0.0.1", 5672), tls=certs.server_context())
    yield proxy.port
    proxy.close()


def test_amqps_with_the_right_ca(amqp_tls: int, certs: Certificates) -> None:
    from soloist.brokers.amqp import AMQPBroker

    queue = f"tls-{uuid.uuid4().hex[:8]}"
    broker = AMQPBroker(
        f"amqps://guest:guest@127.0.0.1:{amqp_tls}/?ssl_ca_certs={certs.ca}&queue_expires=60"
    )
    try:
        broker.publish(queue, b"over tls")
        (delivery,) = broker.fetch([queue], 1, 5, 5)
        assert delivery.body == b"over tls" and broker.ack(delivery)
    finally:
        broker.close()


def test_amqps_with_a_wrong_ca_fails_clearly(amqp_tls: int, certs: Certificates) -> None:
    from soloist.brokers.amqp import AMQPBroker

    url = f"amqps://guest:s3cret@127.0.0.1:{amqp_tls}/?ssl_ca_certs={certs.other_ca}"
    broker = AMQPBroker(url + "&publish_timeout=3")
    try:
        with pytest.raises(BrokerUnavailable) as err:
            broker.publish("q", b"x")
        assert "certificate verify failed" in str(err.value).lower()
        assert "s3cret" not in str(err.value)
    finally:
        broker.close()
