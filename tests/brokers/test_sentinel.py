"""Redis behind Sentinel: workers and a producer follow a failover without a restart; and
`?wait_replicas=` on a server whose replicas do not confirm."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App
from soloist.brokers.redis import RedisBroker
from soloist.errors import BrokerUnavailable, ConfigurationError
from tests.conftest import WorkerProcesses
from tests.support.redis_support import FlushingRedisBroker, RedisServer, prefixed_url
from tests.support.sentinel_support import SentinelGroup
from tests.support.waiting import wait_until


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    (tmp_path / "sentinel").mkdir()
    g = SentinelGroup(tmp_path / "sentinel")
    try:
        g.start()
        yield g
    finally:
        g.stop()


def test_sentinel_urls_are_checked() -> None:
    for bad in ("redis+sentinel://h1:26379/", "redis+sentinel://h1:x/m/0"):
        with pytest.raises(ConfigurationError):
            RedisBroker(bad)
    broker = RedisBroker("redis+sentinel://:pw@h1:26379,h2/mymaster/3?wait_replicas=1")
    assert broker.redis.wait_replicas == 1 and "pw" not in broker.redis.redacted
    assert broker.redis.client.connection_pool.connection_kwargs["db"] == 3


def publish(app: App, a: int) -> str:
    """As a producer would: send again while the broker is unreachable or unreplicated."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return app.send_task("add", (a, 1)).id
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_workers_and_producer_follow_a_failover(
    group: SentinelGroup, workers: WorkerProcesses, sample_app: App
) -> None:
    url = group.url(wait_replicas=1)
    workers.use(url)
    sample_app.configure(url, url)
    procs = [workers.start() for _ in range(2)]
    sent = [publish(sample_app, a) for a in range(60)]
    assert sample_app.result(sent[0]).get(timeout=30) == 1
    # Both running: a worker's first call is not retried.
    wait_until(lambda: len(sample_app.broker.workers()) >= 2, 30, "both workers' heartbeats")
    group.kill_master()  # mid-run: most of the 60 are still queued
    sent += [publish(sample_app, a) for a in range(60, 90)]
    got = [sample_app.result(task_id).get(timeout=60) for task_id in sent]
    assert got == [a + 1 for a in range(90)]
    ended = [workers.output(p) for p in procs if p.poll() is not None]
    assert not ended, ended  # followed, never restarted


def test_wait_replicas_refuses_a_publish_no_replica_confirmed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server without replicas never confirms: the publish raises (it is on the master,
    so sending it again may run it twice, never zero times); a settle only warns."""
    url = prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url, wait_replicas=1,
                       wait_timeout=0.05)  # fmt: skip
    broker = FlushingRedisBroker(url)
    try:
        with pytest.raises(BrokerUnavailable, match="reached 0 of 1 replicas"):
            broker.publish("q", b"x")
        assert broker.depth("q") == 1
        (delivery,) = broker.fetch(["q"], 1, 30, timeout=0)
        with caplog.at_level(logging.WARNING, logger="soloist.redis"):
            assert broker.ack(delivery)
        assert "a settle reached 0 of 1 replicas" in caplog.text
        assert broker.depth("q") == 0
    finally:
        broker.close()
