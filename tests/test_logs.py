"""The worker's per-task log lines (soloist.logs.task_events)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from soloist import App, logs


@pytest.fixture
def worker_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("soloist.worker")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_no_task_hooks_where_debug_lines_are_not_shown(worker_log: logging.Logger) -> None:
    # A hook that would only return costs every task's start: none is added.
    worker_log.setLevel(logging.INFO)
    app = App("memory://", "memory://")
    logs.task_events(app)
    assert not {"task_started", "task_succeeded"} & app.hooks.active
    app.close()


def test_task_hooks_at_debug(worker_log: logging.Logger) -> None:
    worker_log.setLevel(logging.DEBUG)
    app = App("memory://", "memory://")
    logs.task_events(app)
    assert {"task_started", "task_succeeded"} <= app.hooks.active
    app.close()
