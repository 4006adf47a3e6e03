"""Helpers for testing code that uses Soloist.

* Eager mode: `App(eager=True)` runs each task inside `delay()`/`apply_async()` and stores
  its result, so `.get()` works without a worker (retries run at once, without waiting).
* `drain(app)`: run a real worker in this process until the queues are empty, e.g. with
  `App("memory://", "memory://")` in a test, then assert on results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .brokers.base import Delivery
from .worker.execution import STATE_OF, Executor, Kind
from .workflow import proceed

if TYPE_CHECKING:
    from .app import App
    from .message import Message
    from .worker.loop import Stats


def run_eagerly(app: App, message: Message, queue: str, body: bytes) -> None:
    """Run `message` (encoded as `body`) now, in this thread, retrying at once until it
    ends; store the result."""
    executor = Executor(app)
    attempts = 0
    try:
        while True:
            outcome = executor.execute(Delivery(message.id, queue, body, 1, attempts))
            if outcome.kind is not Kind.RETRY:
                break
            attempts += 1
    finally:
        executor.close()
    if outcome.kind is Kind.DEAD:
        raise TypeError(outcome.reason)
    if outcome.result is not None:
        app.results.put(message.id, STATE_OF[outcome.kind], outcome.result, app.result_ttl)
    if outcome.workflow is not None:
        proceed(app, [(Delivery(message.id, queue, body, 1, attempts), outcome)])


def drain(app: App, queues: Sequence[str] | None = None, **options: Any) -> Stats:
    """Run a worker in this process until `queues` are empty; returns what it counted."""
    from .worker import Worker

    options.setdefault("watchdog", False)
    worker = Worker(app, queues, burst=True, **options)
    worker.run()
    return worker.stats
