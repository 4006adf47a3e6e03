"""An app used before a fork (a gunicorn master that preloads the app and sends at
import, say) works in the forked child, on connections of the child's own: each broker
notices the fork itself (SQLite and Redis compare the pid, RabbitMQ starts a new I/O
thread where the parent's did not survive), and the parent's connection still works."""

from __future__ import annotations

import os
import signal
import uuid
import warnings
from pathlib import Path

import pytest

from soloist import App
from tests.support.redis_support import delete_prefix, prefixed_url
from tests.support.servers import AMQP_URL, require


def _send_in_child(app: App, queue: str) -> int:
    """Fork; the child sends one message and exits 0, or 1 if it raised, or dies by
    SIGALRM if it hangs. Returns the child's wait status."""
    with warnings.catch_warnings():
        # Forking a process with threads (RabbitMQ's I/O thread) is what gunicorn does.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no pytest from here on
        code = 1
        try:
            signal.alarm(20)
            app.send_task("tests.noop", queue=queue)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.parametrize("kind", ["sqlite", "redis", "amqp"])
def test_an_app_used_before_a_fork_works_in_the_child(kind: str, tmp_path: Path) -> None:
    if kind == "amqp":
        require("RabbitMQ", "127.0.0.1", 5672)
        app = App(AMQP_URL)
    elif kind == "redis":
        require("Redis", "127.0.0.1", 6379)
        app = App(prefixed_url(f"fork-{uuid.uuid4().hex[:8]}:"))
    else:
        app = App(f"sqlite:///{tmp_path}/soloist.db")
    queue = f"fork-{uuid.uuid4().hex[:8]}"
    try:
        app.send_task("tests.noop", queue=queue)  # the parent's connection is open
        parent_broker = app.broker
        status = _send_in_child(app, queue)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert app.broker is parent_broker  # the parent keeps its own
        app.send_task("tests.noop", queue=queue)
        assert app.broker.depth(queue) == 3
    finally:
        if kind == "amqp":
            app.broker.delete(queue)  # type: ignore[attr-defined]
        if kind == "redis":
            delete_prefix(app.broker.redis)  # type: ignore[attr-defined]
        app.close()
