"""A worker dies after a workflow task's result is stored and its continuation sent, before
the ack (os._exit at `before_ack`), on each broker: the redelivered task is continued again,
and what it sends again does not run twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App, chain, chord
from tests.conftest import WorkerProcesses
from tests.support.broker_matrix import BROKERS, on_broker


@pytest.fixture(params=BROKERS)
def queue(
    request: pytest.FixtureRequest, workers: WorkerProcesses, sample_app: App, tmp_path: Path
) -> Iterator[str]:
    """Points the producer and the workers at one broker; the queue to use on it."""
    with on_broker(request.param, "wfcrash", sample_app, workers, tmp_path) as queue:
        yield queue


def _crash_then_finish(workers: WorkerProcesses, queue: str) -> None:
    """Run a worker that dies at its first ack, then one that finishes the queue."""
    worker = ["worker", "-A", "tests.support.sample_app:app", "-Q", queue, "--lease", "1"]
    workers.env["SOLOIST_CRASH_AT"] = "before_ack:SUCCESS"
    crashed = workers.run(*worker, "--prefetch", "1")
    assert crashed.returncode == 99, crashed.stderr
    del workers.env["SOLOIST_CRASH_AT"]
    time.sleep(1.2)  # the dead worker's lease lapses
    done = workers.run(*worker, "--burst")
    assert done.returncode == 0, done.stderr


def test_a_chain_step_continued_twice_runs_the_next_step_once(
    workers: WorkerProcesses, sample_app: App, queue: str
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    result = chain(
        sleepy.si(0, "a").set(queue=queue), sleepy.si(0, "b").set(queue=queue)
    ).apply_async()
    # The second worker runs b, settles a's redelivery without running it, and the copy of
    # b that the redelivery sends without running it.
    _crash_then_finish(workers, queue)
    assert result.get(timeout=5) == "b"
    starts = [line.split()[1] for line in workers.lines() if line.startswith("start ")]
    assert sorted(starts) == ["a", "b"]


@pytest.mark.parametrize("size", [1, 3])
def test_a_chord_member_continued_twice_runs_the_callback_once(
    workers: WorkerProcesses, sample_app: App, queue: str, size: int
) -> None:
    """With one member, the member that dies is the one that completed the chord and sent
    the callback; with three, it is counted again when it is redelivered."""
    sleepy, collect = sample_app.tasks["sleepy"], sample_app.tasks["collect"]
    tags = [f"m{i}" for i in range(size)]
    members = [sleepy.si(0, tag).set(queue=queue) for tag in tags]
    result = chord(members, collect.s("c").set(queue=queue)).apply_async()
    # The callback and the other members run once each; the redelivered member is settled,
    # and a copy of the callback it sends again (if it completed the chord) does not run.
    _crash_then_finish(workers, queue)
    assert result.get(timeout=5) == tags
    assert result.group.get(timeout=1) == tags
    assert [line for line in workers.lines() if line.startswith("collect")] == [f"collect c {tags}"]
    starts = sorted(line.split()[1] for line in workers.lines() if line.startswith("start "))
    assert starts == tags
