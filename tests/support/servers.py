"""Reaching the real servers that broker tests need.

A test whose server cannot be reached is skipped with the reason, except under CI (the
`CI` environment variable set), where that is a failure: CI must exercise every broker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
import warnings
from urllib.parse import urlsplit

import pika
import pytest

REDIS_URL = os.environ.get("SOLOIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("SOLOIST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _address(url: str, port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or port


#: Tests name the default addresses; the environment's URLs move them to other servers.
_MOVED = {
    ("127.0.0.1", 6379): _address(REDIS_URL, 6379),
    ("127.0.0.1", 5672): _address(AMQP_URL, 5672),
}


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    """Skip (fail under CI) unless `host:port` accepts connections (the server of
    SOLOIST_TEST_REDIS_URL or SOLOIST_TEST_AMQP_URL for the default addresses)."""
    host, port = _MOVED.get((host, port), (host, port))
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run every broker's tests)")
    pytest.skip(message)


def rabbitmq_fault(url: str = AMQP_URL) -> str | None:
    """None if RabbitMQ declares a quorum queue and confirms a publish to it, else why not."""
    name = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare(
                name, durable=True, arguments={"x-queue-type": "quorum", "x-expires": 60_000}
            )
            channel.basic_publish("", name, b"probe", mandatory=True)
            channel.queue_delete(name)
    except Exception as exc:  # any failure is the answer
        return f"{type(exc).__name__}: {exc}"
    return None


def mend_rabbitmq() -> None:
    """Make sure RabbitMQ serves quorum queues; if it does not, restart its app once.

    Once in CI, RabbitMQ 3.10 came back from a test's `stop_app`/`start_app` answering
    every connection that declared a new quorum queue with 541 INTERNAL_ERROR, and every
    later RabbitMQ test failed on it. That is the server's fault, not the code under test:
    the tests that restart RabbitMQ call this after, and so does CI before the tests.
    """
    fault = rabbitmq_fault()
    if fault is None or shutil.which("rabbitmqctl") is None:
        return
    warnings.warn(f"RabbitMQ is broken ({fault}); restarting it", stacklevel=2)
    for command in ("stop_app", "start_app", "await_startup"):
        subprocess.run(["rabbitmqctl", "-q", command], capture_output=True, timeout=120)
    fault = rabbitmq_fault()
    assert fault is None, f"RabbitMQ still broken after a restart: {fault}"
