"""One app and the test's workers pointed at one broker of the matrix (SQLite, Redis,
RabbitMQ), for tests that run the same scenario on each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soloist import App
from tests.conftest import WorkerProcesses
from tests.support.redis_support import delete_prefix, prefixed_url
from tests.support.servers import AMQP_URL, require

BROKERS = ["sqlite", "redis", "amqp"]


@contextmanager
def on_broker(
    kind: str, name: str, app: App, workers: WorkerProcesses, tmp_path: Path
) -> Iterator[str]:
    """Points `app` (the producer) and `workers` at a broker of `kind`; yields a queue of the
    test's own, `<name>-<tag>`. On Redis, keys go under a prefix of their own, deleted after;
    on RabbitMQ results go to SQLite and the queue expires once unused."""
    tag = uuid.uuid4().hex[:8]
    if kind == "redis":
        require("Redis", "127.0.0.1", 6379)
        broker = results = prefixed_url(f"soloist-{name}-{tag}:")
    elif kind == "amqp":
        require("RabbitMQ", "127.0.0.1", 5672)
        broker = f"{AMQP_URL}?queue_expires=60"
        results = f"sqlite:///{tmp_path}/results.db"
    else:
        broker = results = workers.url
    app.configure(broker, results)
    workers.use(broker, results)
    yield f"{name}-{tag}"
    if kind == "redis":
        delete_prefix(app.broker.redis)  # type: ignore[attr-defined]
