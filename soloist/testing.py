"""Helpers for testing code that uses Soloist.

* `drain(app)`: run a real worker in this process until the queues are empty, e.g. with
  `App("memory://", "memory://")` in a test, then assert on results.
* Eager mode, `App(eager=True)`, runs each task inside `delay()` instead (see soloist.eager).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .app import App
from .worker import Worker
from .worker.loop import Stats


def drain(app: App, queues: Sequence[str] | None = None, **options: Any) -> Stats:
    """Run a worker in this process until `queues` are empty; returns what it counted."""
    options.setdefault("watchdog", False)
    options.setdefault("owns_process", False)  # the caller's own children are not tasks'
    worker = Worker(app, queues, burst=True, **options)
    worker.run()
    return worker.stats
