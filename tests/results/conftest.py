"""One fixture per result store; the contract suite runs against each.

Adding a store means adding a factory to STORES (taking pytest's tmp_path); one on a
private server of the session's names that server's fixture in SERVERS, as the broker
matrix does (tests/brokers/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from soloist.results.base import ResultStore
from soloist.results.memory import MemoryResultStore
from soloist.results.sqlite import SQLiteResultStore
from tests.support.servers import require


def _redis_store(tmp: Path) -> ResultStore:
    """A store on the test database under a key prefix of its own, deleted on close."""
    require("Redis", "127.0.0.1", 6379)
    from tests.support.redis_support import FlushingRedisResultStore, prefixed_url

    return FlushingRedisResultStore(prefixed_url(f"soloist-test-{uuid.uuid4().hex[:10]}:"))


def _redis_cluster_store(tmp: Path) -> ResultStore:
    """A store on the session's private Redis Cluster, under a key prefix of its own."""
    from soloist.results.redis import RedisResultStore
    from tests.support.redis_cluster_support import running_cluster

    return RedisResultStore(running_cluster().url(prefix=f"soloist-test-{uuid.uuid4().hex[:10]}:"))


STORES: dict[str, Callable[[Path], ResultStore]] = {
    "memory": lambda tmp: MemoryResultStore(),
    "sqlite": lambda tmp: SQLiteResultStore(f"sqlite:///{tmp}/results.db"),
    "redis": _redis_store,
    "redis-cluster": _redis_cluster_store,
}
SERVERS = {"redis-cluster": "redis_cluster"}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    if request.param in SERVERS:
        request.getfixturevalue(SERVERS[request.param])  # started, and stopped at the end
    store = STORES[request.param](tmp_path)
    yield store
    store.close()
