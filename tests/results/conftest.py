"""One fixture per result store; the contract suite runs against each.

Adding a store means adding a factory to STORES (taking pytest's tmp_path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from soloist.results.base import ResultStore
from soloist.results.memory import MemoryResultStore
from soloist.results.sqlite import SQLiteResultStore

STORES: dict[str, Callable[[Path], ResultStore]] = {
    "memory": lambda tmp: MemoryResultStore(),
    "sqlite": lambda tmp: SQLiteResultStore(f"sqlite:///{tmp}/results.db"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    store = STORES[request.param](tmp_path)
    yield store
    store.close()
