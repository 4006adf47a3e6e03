"""Eager mode: `App(eager=True)` runs each task inside `delay()`, for tests of code that
sends tasks.

It is a broker (`eager://`) whose `publish` runs the message at once, in the caller's
thread, through the same `TaskRunner` a worker uses, and stores the result; a retry runs
again at once, without its back-off, and a task held back by a limit waits for it. A
message that cannot run (unknown task, arguments that do not fit) raises `TypeError`
from `delay()`. The eager broker runs tasks, so it sits above `soloist.execution`, where
the app cannot import it: it registers itself with `App` when the package is imported.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from .app import App
from .brokers.base import Delivery
from .brokers.memory import MemoryBroker
from .execution import STATE_OF, Kind, TaskRunner
from .workflow import proceed


class EagerBroker(MemoryBroker):
    """A broker that runs what is published at once, and keeps nothing."""

    def __init__(self, app: App) -> None:
        super().__init__("eager://", app.max_deliveries)
        self.app = app

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        delivery_id = uuid.uuid4().hex
        runner = TaskRunner(self.app)
        retries = 0
        try:
            while True:
                delivery = Delivery(delivery_id, queue, body, 1, retries)
                outcome = runner.run(delivery)
                if outcome.kind is Kind.DEFERRED:  # held back by a limit: wait here
                    time.sleep(outcome.delay)
                    continue
                if outcome.kind is not Kind.RETRY:
                    break
                retries += 1
        finally:
            runner.close()
        if outcome.kind is Kind.DEAD:
            raise TypeError(outcome.reason)
        if outcome.record is not None:
            state = STATE_OF[outcome.kind]
            self.app.results.put(outcome.task_id, state, outcome.record, self.app.result_ttl)
        if outcome.workflow is not None:
            proceed(self.app, [outcome])
        return delivery_id

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        return [self.publish(q, body, delay=d, priority=p) for q, body, d, p in items]


App.eager_broker = EagerBroker
