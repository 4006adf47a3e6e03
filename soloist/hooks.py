"""Hooks around a task's life, so logging, metrics, tracing and error reporting plug in
without patching the worker.

    @app.hooks.on("task_failed")
    def report(event: str, **info: Any) -> None: ...

Events and their keyword arguments:

* `before_publish`, `after_publish`: app, message, queue (around each publish, in the
  producer: before it is encoded, so a hook may add options; after it, with `error` the
  exception it raised or None)
* `worker_start`, `worker_stop`: worker
* `received`: worker, delivery (right after it was fetched)
* `task_started`: worker, delivery, message, task (in the thread that runs the task)
* `settling`: worker, delivery, outcome (the task ran; nothing is recorded or settled yet)
* `before_ack`: worker, delivery, outcome (the result is stored, the message not yet settled)
* `task_succeeded`, `task_failed`, `task_retried`, `task_revoked`, `dead_lettered`: worker,
  delivery, outcome (its `task`, `task_id`, `reason` and `runtime`), once the message is
  settled. `task_failed` means no retries are left (the message is dead-lettered too);
  `dead_lettered` is a message that never ran (undecodable, unknown task, bad arguments);
  `task_revoked` a task skipped or stopped by `Result.revoke()`.

Every event but `task_started` is emitted in the worker's main thread, in this order for
one delivery: received, task_started, settling, before_ack, then the outcome's event.

A hook that raises is logged and otherwise ignored: it must not lose the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("soloist.hooks")

EVENTS = frozenset(
    {
        "before_publish",
        "after_publish",
        "worker_start",
        "worker_stop",
        "received",
        "task_started",
        "task_succeeded",
        "task_failed",
        "task_retried",
        "task_revoked",
        "dead_lettered",
        "settling",
        "before_ack",
    }
)

Hook = Callable[..., None]


class Hooks:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Hook]] = {}
        #: Events with a handler. The worker's per-task call sites test it first, so an
        #: event nobody listens to costs a set lookup instead of a call with keywords.
        self.active: set[str] = set()

    def on(self, event: str) -> Callable[[Hook], Hook]:
        """Decorator registering a handler for `event`."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}; known: {', '.join(sorted(EVENTS))}")

        def register(fn: Hook) -> Hook:
            self._handlers.setdefault(event, []).append(fn)
            self.active.add(event)
            return fn

        return register

    def emit(self, event: str, **info: Any) -> None:
        for handler in self._handlers.get(event, ()):
            try:
                handler(event, **info)
            except Exception:
                log.exception("hook %s for %s failed", getattr(handler, "__name__", handler), event)
