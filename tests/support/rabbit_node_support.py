"""A private RabbitMQ node for tests that break the server (restart it, retune it), so the
machine's shared RabbitMQ is never touched: benchmarks/rabbit_node.py's node, with its own
name, free ports, data directory and Erlang cookie. It boots in about 8 s on a loaded
2-core machine, so one node serves the whole session (the `rabbit_node` fixture)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.rabbit_node import SBIN, Node, cookie


def require_rabbitmq_server() -> None:
    """Skip (fail under CI) unless rabbitmq-server is installed to start private nodes."""
    if not os.path.exists(f"{SBIN}/rabbitmq-server"):
        message = "rabbitmq-server is not installed"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run every broker's tests)")
        pytest.skip(message)


@contextmanager
def running_node(home: Path) -> Iterator[Node]:
    """A node started under `home` and halted after."""
    require_rabbitmq_server()
    cookie(home)
    node = Node(home, "tests")
    try:
        node.start()
        node.wait()
        yield node
    finally:
        node.halt()
