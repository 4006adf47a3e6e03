"""One fixture per result store; the contract suite runs against each.

Adding a store means adding a factory to STORES (taking pytest's tmp_path).
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


STORES: dict[str, Callable[[Path], ResultStore]] = {
    "memory": lambda tmp: MemoryResultStore(),
    "sqlite": lambda tmp: SQLiteResultStore(f"sqlite:///{tmp}/results.db"),
    "redis": _redis_store,
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    store = STORES[request.param](tmp_path)
    yield store
    store.close()
