"""One fixture per broker; the contract suite runs against each of them.

Adding a broker means adding a factory to BROKERS: a function taking pytest's tmp_path
and max_deliveries and returning a broker; one on a private server of the session's (the
Redis Cluster) names that server's fixture in SERVERS, started only if one of its tests
runs. Within one test, every broker it makes talks to the same store (as two workers on
one server would); tests keep apart by queue name. A broker whose leases do not end by
time also says in HOLDER_DIES how a holder "dies".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from soloist.brokers.base import Broker
from soloist.brokers.memory import MemoryBroker
from soloist.brokers.sqlite import SQLiteBroker
from tests.support.servers import require

BrokerFactory = Callable[[Path, int], Broker]

_memory: dict[Path, MemoryBroker] = {}
_redis_prefixes: dict[Path, str] = {}


def _memory_broker(tmp: Path, max_deliveries: int) -> Broker:
    """One in-process broker per test, seen by every consumer of that test."""
    return _memory.setdefault(tmp, MemoryBroker(max_deliveries=max_deliveries))


def _redis_broker(tmp: Path, max_deliveries: int) -> Broker:
    """A broker on the test database under a key prefix of this test's own, deleted on close."""
    require("Redis", "127.0.0.1", 6379)
    from tests.support.redis_support import FlushingRedisBroker, prefixed_url

    prefix = _redis_prefixes.setdefault(tmp, f"soloist-test-{uuid.uuid4().hex[:10]}:")
    return FlushingRedisBroker(prefixed_url(prefix), max_deliveries)


def _amqp_broker(tmp: Path, max_deliveries: int) -> Broker:
    """Priority lanes 0-2 (the suite's 0, 1, 5 stay in order); queues deleted on close."""
    require("RabbitMQ", "127.0.0.1", 5672)
    from tests.support.amqp_support import DeletingAMQPBroker, amqp_url

    return DeletingAMQPBroker(amqp_url(max_priority=2, queue_expires=120), max_deliveries)


def _redis_cluster_broker(tmp: Path, max_deliveries: int) -> Broker:
    """A broker on the session's private 3-master Redis Cluster, under a prefix of the
    test's own (the cluster is thrown away after the session)."""
    from soloist.brokers.redis_cluster import RedisClusterBroker
    from tests.support.redis_cluster_support import running_cluster

    prefix = _redis_prefixes.setdefault(tmp, f"soloist-test-{uuid.uuid4().hex[:10]}:")
    return RedisClusterBroker(running_cluster().url(prefix=prefix), max_deliveries)


BROKERS: dict[str, BrokerFactory] = {
    "memory": _memory_broker,
    "sqlite": lambda tmp, md: SQLiteBroker(f"sqlite:///{tmp}/broker.db", max_deliveries=md),
    "redis": _redis_broker,
    "redis-cluster": _redis_cluster_broker,
    "amqp": _amqp_broker,
}


#: The session fixture of the private server a broker kind needs.
SERVERS = {"redis-cluster": "redis_cluster"}


def _wait_past_lease(broker: Broker, lease: float) -> None:
    time.sleep(lease + 0.4)  # long enough for a lease to lapse, on a slow machine too


#: How a test ends the leases a consumer holds, as its worker's death would. By default
#: the lease runs out; on AMQP the lease is the channel's life, so the connection closes.
HOLDER_DIES: dict[str, Callable[[Broker, float], None]] = {
    "amqp": lambda broker, lease: broker.die(),  # type: ignore[attr-defined]
}


@pytest.fixture
def holder_dies(request: pytest.FixtureRequest) -> Callable[[Broker, float], None]:
    """`holder_dies(broker, lease)`: the leases `broker` holds end; it stays usable."""
    kind = request.node.callspec.params["make_broker"]
    return HOLDER_DIES.get(kind, _wait_past_lease)


@pytest.fixture(params=sorted(BROKERS))
def make_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Builds brokers of one kind; each test gets fresh ones, closed afterwards."""
    made: list[Broker] = []
    if request.param in SERVERS:
        request.getfixturevalue(SERVERS[request.param])  # started, and stopped at the end

    def make(max_deliveries: int = 5) -> Broker:
        broker = BROKERS[request.param](tmp_path, max_deliveries)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses, so brokers on shared servers need no flushing."""
    return f"test-{uuid.uuid4().hex[:10]}"
