"""A worker dies after a workflow task's result is stored and its continuation sent, before
the ack (os._exit at `before_ack`), on each broker: the redelivered task is continued again,
and nothing after it runs twice or is sent twice."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App, chain, chord
from tests.conftest import WorkerProcesses
from tests.redis_support import delete_prefix, prefixed_url
from tests.servers import AMQP_URL, require


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def queue(
    request: pytest.FixtureRequest, workers: WorkerProcesses, sample_app: App, tmp_path: Path
) -> Iterator[str]:
    """Points the producer and the workers at one broker; the queue to use on it."""
    tag = uuid.uuid4().hex[:8]
    if request.param == "redis":
        require("Redis", "127.0.0.1", 6379)
        broker = results = prefixed_url(f"soloist-wfcrash-{tag}:")
    elif request.param == "amqp":
        require("RabbitMQ", "127.0.0.1", 5672)
        broker = f"{AMQP_URL}?queue_expires=60"
        results = f"sqlite:///{tmp_path}/results.db"
    else:
        broker = results = workers.url
    sample_app.configure(broker, results)
    workers.use(broker, results)
    yield f"wfcrash-{tag}"
    if request.param == "redis":
        delete_prefix(sample_app.broker.redis)  # type: ignore[attr-defined]


def _crash_then_finish(workers: WorkerProcesses, queue: str) -> int:
    """Run a worker that dies at its first ack, then one that finishes the queue; how
    many tasks the second one settled."""
    worker = ["worker", "-A", "tests.sample_app:app", "-Q", queue, "--lease", "1"]
    workers.env["SOLOIST_CRASH_AT"] = "before_ack:SUCCESS"
    crashed = workers.run(*worker, "--prefetch", "1")
    assert crashed.returncode == 99, crashed.stderr
    del workers.env["SOLOIST_CRASH_AT"]
    time.sleep(1.2)  # the dead worker's lease lapses
    done = workers.run(*worker, "--burst", "--loglevel", "info")
    assert done.returncode == 0, done.stderr
    settled = re.search(r"stopped: (\d+) done", done.stderr)
    assert settled is not None, done.stderr
    return int(settled.group(1))


def test_a_chain_step_continued_twice_sends_the_next_step_once(
    workers: WorkerProcesses, sample_app: App, queue: str
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    result = chain(
        sleepy.si(0, "a").set(queue=queue), sleepy.si(0, "b").set(queue=queue)
    ).apply_async()
    # The second worker runs b and settles a's redelivery without running it or sending b
    # again (a second b would be a third task settled).
    assert _crash_then_finish(workers, queue) == 2
    assert result.get(timeout=5) == "b"
    starts = [line.split()[1] for line in workers.lines() if line.startswith("start ")]
    assert sorted(starts) == ["a", "b"]


@pytest.mark.parametrize("size", [1, 3])
def test_a_chord_member_continued_twice_sends_the_callback_once(
    workers: WorkerProcesses, sample_app: App, queue: str, size: int
) -> None:
    """With one member, the member that dies is the one that completed the chord and sent
    the callback; with three, it is counted again when it is redelivered."""
    sleepy, collect = sample_app.tasks["sleepy"], sample_app.tasks["collect"]
    tags = [f"m{i}" for i in range(size)]
    members = [sleepy.si(0, tag).set(queue=queue) for tag in tags]
    result = chord(members, collect.s("c").set(queue=queue)).apply_async()
    # The callback and the other members run once each; the redelivered member is settled.
    assert _crash_then_finish(workers, queue) == size + 1
    assert result.get(timeout=5) == tags
    assert result.group.get(timeout=1) == tags
    assert [line for line in workers.lines() if line.startswith("collect")] == [f"collect c {tags}"]
    starts = sorted(line.split()[1] for line in workers.lines() if line.startswith("start "))
    assert starts == tags
