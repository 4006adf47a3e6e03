"""Dashboard fixtures: the sample app on a live broker (SQLite or Redis) with real worker
processes, and API clients of the dashboard on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from soloist import App
from soloist.dashboard.server import create_app
from tests.conftest import WorkerProcesses
from tests.support.servers import require


@dataclass
class Live:
    app: App
    workers: WorkerProcesses
    url: str


@pytest.fixture(params=["sqlite", "redis"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    """tests.support.sample_app's app and its workers on one broker (results beside it)."""
    from tests.support import sample_app

    if request.param == "redis":
        require("Redis", "127.0.0.1", 6379)
        from tests.support.redis_support import delete_prefix, prefixed_url

        url = prefixed_url(f"soloist-test-dash-{uuid.uuid4().hex[:10]}:")
    else:
        url = f"sqlite:///{tmp_path}/soloist.db"
    workers = WorkerProcesses(url, tmp_path / "ledger.txt")
    sample_app.app.configure(url, url)
    try:
        yield Live(sample_app.app, workers, url)
    finally:
        workers.stop_all()
        if request.param == "redis":
            delete_prefix(sample_app.app.broker.redis)  # type: ignore[attr-defined]
        sample_app.app.close()


Client = Callable[..., TestClient]


@pytest.fixture
def client(live: Live) -> Iterator[Client]:
    """Makes API clients of a dashboard on the live app (create_app's keywords)."""
    made: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        web = create_app(live.app, refresh=options.pop("refresh", 0.2), **options)
        c = TestClient(web, base_url="http://127.0.0.1:8800")
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
