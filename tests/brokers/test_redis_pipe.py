"""The Redis ack pipe: settles written as tasks end, replies read later (issue 20)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from soloist.brokers.base import Delivery
from soloist.brokers.redis import RedisBroker
from soloist.errors import BrokerUnavailable
from soloist.results.memory import MemoryResultStore
from soloist.results.redis import RedisResultStore
from tests.support.netfaults import FaultyProxy
from tests.support.redis_support import (
    FlushingRedisBroker,
    FlushingRedisResultStore,
    RedisServer,
    prefixed_url,
)
from tests.support.waiting import wait_until


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url)


@pytest.fixture
def pair(url: str) -> Iterator[tuple[RedisBroker, RedisResultStore]]:
    broker, results = FlushingRedisBroker(url), FlushingRedisResultStore(url)
    yield broker, results
    results.close()
    broker.close()


def record(n: int) -> tuple[str, str, bytes]:
    return (f"task-{n}", "SUCCESS", b"body")


def test_records_and_acks_go_down_the_pipe(pair: tuple[RedisBroker, RedisResultStore]) -> None:
    broker, results = pair
    broker.publish_many([("q", b"x", 0, 0)] * 3)
    deliveries = broker.fetch(["q"], 3, 30, 1.0)
    pipe = broker.ack_pipe(results)
    assert pipe.records
    for n, d in enumerate(deliveries):
        pipe.send(d, record(n), 60)
    assert pipe.pending == 3
    assert pipe.collect() == [True, True, True]
    assert pipe.pending == 0
    assert [results.get(f"task-{n}") for n in range(3)] == [("SUCCESS", b"body")] * 3
    assert broker.depth("q") == 0 and broker.fetch(["q"], 3, 30, 0) == []
    assert broker.ack_many(deliveries) == [False] * 3  # settled for good


def test_a_store_elsewhere_leaves_the_pipe_to_acks(url: str, redis_server: RedisServer) -> None:
    broker = RedisBroker(url)
    elsewhere = RedisResultStore(prefixed_url("t:"))  # the shared server, not this one
    try:
        for results in (MemoryResultStore(), elsewhere):
            pipe = broker.ack_pipe(results)
            assert not pipe.records
            with pytest.raises(ValueError):
                pipe.send(Delivery("1", "q", b"x", 1, 0, "r"), record(0), 60)
    finally:
        elsewhere.close()
        broker.close()


def test_a_refused_transaction_stores_and_acks_nothing(
    redis_server: RedisServer, pair: tuple[RedisBroker, RedisResultStore]
) -> None:
    """At maxmemory the record's script may not run: neither may the ack behind it."""
    broker, results = pair
    broker.publish_many([("q", b"x", 0, 0)])
    (delivery,) = broker.fetch(["q"], 1, 30, 1.0)
    pipe = broker.ack_pipe(results)
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("maxmemory", 1)  # a private server
    try:
        pipe.send(delivery, record(0), 60)
        with pytest.raises(BrokerUnavailable):
            pipe.collect()
        assert results.get("task-0") is None
        assert broker.extend([delivery], 30) == []  # still ours, not acked
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    assert pipe.collect() == [True]
    assert results.get("task-0") == ("SUCCESS", b"body")
    assert broker.depth("q") == 0


def test_settles_whose_replies_were_lost_are_sent_again(
    redis_server: RedisServer, url: str
) -> None:
    """The link drops after Redis ran an ack and a record, their replies unread: both are
    made again, and the ack that finds its message gone counts as acked."""
    proxy = FaultyProxy(("127.0.0.1", redis_server.port))
    proxied = url.replace(str(redis_server.port), str(proxy.port))
    broker, results = FlushingRedisBroker(proxied), FlushingRedisResultStore(proxied)
    direct = redis.Redis.from_url(redis_server.url)
    try:
        broker.publish_many([("q", b"x", 0, 0)] * 3)
        first, second, third = broker.fetch(["q"], 3, 30, 1.0)
        pipe = broker.ack_pipe(results)
        pipe.send(first, record(0), 60)
        assert pipe.collect() == [True]
        proxy.mute_replies(True)
        pipe.send(second, record(1), 60)
        key = f"{broker.prefix}m:{second.id}"
        wait_until(lambda: not direct.exists(key), 10, "the ack run on the server")
        proxy.mute_replies(False)
        proxy.reset_all()
        pipe.send(third, record(2), 60)
        assert pipe.collect() == [True, True]
        assert [results.get(f"task-{n}") for n in range(3)] == [("SUCCESS", b"body")] * 3
        assert broker.depth("q") == 0
        assert broker.ack_many([second, third]) == [False, False]  # fencing holds
    finally:
        direct.close()
        results.close()
        broker.close()
        proxy.close()
