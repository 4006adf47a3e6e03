"""The kombu-layout broker holds Soloist's contract where Celery's workers can see it:
leases are kombu's unacked entries, fenced by receipt and score."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support.servers import REDIS_URL, require

pytest.importorskip("celery")

from soloist.celery.broker import KombuRedisBroker, broker_url


def envelope(tag: str, eta: str | None = None, priority: int = 0) -> bytes:
    headers = {"task": "t", "id": tag, "eta": eta}
    properties = {
        "delivery_tag": tag,
        "delivery_info": {"exchange": "", "routing_key": "q"},
        "priority": priority,
        "body_encoding": "base64",
    }
    return json.dumps({"body": "", "headers": headers, "properties": properties}).encode()


@pytest.fixture
def prefix() -> Iterator[str]:
    require("Redis", "127.0.0.1", 6379)
    prefix = f"soloist-kombu-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def make(prefix: str, max_deliveries: int = 5) -> KombuRedisBroker:
    return KombuRedisBroker(broker_url(REDIS_URL, {"global_keyprefix": prefix}), max_deliveries)


def test_a_lapsed_lease_goes_to_the_next_worker_and_fences_the_old_one(prefix: str) -> None:
    a, b = make(prefix), make(prefix)
    a.publish("q", envelope("m1"))
    (first,) = a.fetch(["q"], 10, 0.2, 1)
    assert b.fetch(["q"], 10, 0.2, 0) == []  # leased
    assert a.extend([first], 0.3) == []
    time.sleep(0.4)
    (second,) = b.fetch(["q"], 10, 5, 1)
    assert (second.id, second.delivery_count) == ("m1", 2)
    assert a.ack(first) is False  # stale
    assert a.extend([first], 5) == [first]
    assert b.ack(second) is True
    assert a.depth("q") == 0
    client = redis.Redis.from_url(REDIS_URL)
    for key in ("unacked", "soloist.leases", "soloist.deliveries"):
        assert client.hlen(f"{prefix}{key}") == 0, key  # nothing left behind
    for key in ("unacked_index", "soloist.deliveries.at"):
        assert client.zcard(f"{prefix}{key}") == 0, key
    client.close()
    a.close()
    b.close()


def test_a_celery_worker_taking_a_lapsed_message_fences_the_old_holder(prefix: str) -> None:
    broker = make(prefix)
    client = redis.Redis.from_url(REDIS_URL)
    broker.publish("q", envelope("m1"))
    (held,) = broker.fetch(["q"], 1, 0.1, 1)
    time.sleep(0.2)
    # What a Celery worker does: restore (here, our claim's restore on an empty fetch),
    # BRPOP, then record the delivery in unacked with score = now.
    assert broker.fetch(["nothing"], 1, 0.1, 0) == []
    raw = client.rpop(f"{prefix}q")
    assert raw is not None
    client.hset(f"{prefix}unacked", "m1", b"[" + raw + b', "", "q"]')
    client.zadd(f"{prefix}unacked_index", {"m1": time.time()})
    assert broker.ack(held) is False
    assert client.hexists(f"{prefix}unacked", "m1")  # the Celery worker's entry is intact
    client.close()
    broker.close()


def test_a_message_that_kills_its_workers_is_dead_lettered(prefix: str) -> None:
    broker = make(prefix, max_deliveries=2)
    broker.publish("q", envelope("poison"))
    for _ in range(2):
        assert len(broker.fetch(["q"], 1, 0.05, 1)) == 1
        time.sleep(0.1)
    assert broker.fetch(["q"], 1, 0.05, 0.2) == []
    (dead,) = broker.dead_letters("q")
    assert dead.id == "poison"
    assert "delivered 2 times" in dead.reason
    assert broker.requeue_dead("q") == 1
    assert broker.fetch(["q"], 1, 5, 1)[0].id == "poison"
    broker.close()


def test_eta_messages_are_parked_until_due(prefix: str) -> None:
    broker = make(prefix)
    due = time.time() + 0.5
    eta = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due)) + f".{int(due % 1 * 1e6):06d}"
    broker.publish("q", envelope("later", eta=eta + "+00:00"))
    broker.publish("q", envelope("now"))
    got = broker.fetch(["q"], 10, 5, 0.1)
    assert [d.id for d in got] == ["now"]
    (later,) = broker.fetch(["q"], 10, 5, 3)
    assert later.id == "later"
    assert later.delivery_count == 1
    assert time.time() >= due - 0.05
    assert broker.ack_many([*got, later]) == [True, True]
    broker.close()


def test_priorities_and_release(prefix: str) -> None:
    broker = make(prefix)
    broker.publish("q", envelope("low", priority=9), priority=9)
    broker.publish("q", envelope("high", priority=0))
    broker.publish("q", envelope("high2", priority=0))
    first = broker.fetch(["q"], 1, 5, 1)
    assert [d.id for d in first] == ["high"]
    broker.release(first)
    assert [d.id for d in broker.fetch(["q"], 3, 5, 1)] == ["high", "high2", "low"]
    broker.close()
