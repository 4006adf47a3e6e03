"""Helpers for tests on Redis: per-test key prefixes, and private redis-server processes."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist.brokers.redis import RedisBroker
from soloist.brokers.redis_connection import RedisConnection
from soloist.results.redis import RedisResultStore
from tests.support.servers import REDIS_URL


def prefixed_url(prefix: str, base: str = REDIS_URL, **options: object) -> str:
    """`base` with a key prefix (and other query options) added."""
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
    return f"{base}{'&' if '?' in base else '?'}{query}"


def delete_prefix(conn: RedisConnection) -> None:
    """Delete every key under the connection's prefix (tests share one database)."""
    client = conn.client
    keys = list(client.scan_iter(match=conn.prefix + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


class FlushingRedisBroker(RedisBroker):
    """A Redis broker that deletes its keys when closed."""

    def close(self) -> None:
        delete_prefix(self.redis)
        super().close()


class FlushingRedisResultStore(RedisResultStore):
    """A Redis result store that deletes its keys when closed."""

    def close(self) -> None:
        delete_prefix(self.redis)
        super().close()


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block lasts: bound, not
    listening, so no server another test starts meanwhile can take it (as one could a
    port found free and let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def quiet_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now, below the kernel's range for outgoing
    connections (32768-60999 here): between now and a slow start (a cluster's nodes start
    one by one), a port from that range can be taken by any process's next connection."""
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(20000, 32768), 12768):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == count:
                return [int(h.getsockname()[1]) for h in held]
        raise RuntimeError(f"no {count} free ports below 32768")
    finally:
        for h in held:
            h.close()


class RedisServer:
    """A redis-server of a test's own, persisting every write (appendfsync always)."""

    def __init__(self, data_dir: Path, *options: str, port: int = 0) -> None:
        if shutil.which("redis-server") is None:
            message = "redis-server is not installed"
            if os.environ.get("CI"):
                pytest.fail(message + " (CI must run every broker's tests)")
            pytest.skip(message)
        self.dir = data_dir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.options = options  # more redis-server arguments, e.g. "--maxmemory", "2mb"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=10)
        self.proc = None
