"""Reaching the real servers that broker tests need.

A test whose server cannot be reached is skipped with the reason, except under CI (the
`CI` environment variable set), where that is a failure: CI must exercise every broker.
"""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("SOLOIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("SOLOIST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    """Skip (fail under CI) unless `host:port` accepts connections."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run every broker's tests)")
    pytest.skip(message)
