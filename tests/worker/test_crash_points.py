"""Crash-point matrix: a worker dies (os._exit) at each point of a delivery's life, on
each broker.

After a second worker has run, every message must be settled exactly once (gone from the
queue, or in the dead-letter store) and executed at least once: never in two places or in
none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App, TaskError
from tests.conftest import WorkerProcesses
from tests.support.broker_matrix import BROKERS, on_broker

UNKNOWN = b'j{"v":1,"id":"u1","task":"no.such.task","args":[],"kwargs":{}}'

CASES = [
    ("received", "sleepy"),
    ("task_started", "sleepy"),
    ("settling", "sleepy"),
    ("before_ack:SUCCESS", "sleepy"),
    ("before_ack:RETRY", "retry_once"),
    ("before_ack:FAILURE", "fail"),
    ("before_ack:DEAD", "unknown"),
]


@pytest.fixture(params=BROKERS)
def queue(
    request: pytest.FixtureRequest, workers: WorkerProcesses, sample_app: App, tmp_path: Path
) -> Iterator[str]:
    """Points the producer and the workers at one broker; the queue to use on it."""
    with on_broker(request.param, "crash", sample_app, workers, tmp_path) as queue:
        yield queue


@pytest.mark.parametrize(("crash_at", "task"), CASES, ids=[c[0] for c in CASES])
def test_crash_point(
    workers: WorkerProcesses, sample_app: App, queue: str, crash_at: str, task: str
) -> None:
    broker = sample_app.broker
    if task == "unknown":
        broker.publish(queue, UNKNOWN)
        result = None
    elif task == "sleepy":
        result = sample_app.tasks["sleepy"].apply_async((0, "t"), queue=queue)
    else:
        result = sample_app.tasks[task].apply_async(("t",), queue=queue)

    worker = ["worker", "-A", "tests.support.sample_app:app", "-Q", queue, "--lease", "1"]
    workers.env["SOLOIST_CRASH_AT"] = crash_at
    crashed = workers.run(*worker)
    assert crashed.returncode == 99, crashed.stderr
    del workers.env["SOLOIST_CRASH_AT"]
    time.sleep(1.2)  # the dead worker's lease lapses
    done = workers.run(*worker, "--burst")
    assert done.returncode == 0, done.stderr

    assert broker.depth(queue) == 0
    assert broker.fetch([queue], 10, 1, 1.5) == []  # nothing still leased either
    dead = broker.dead_letters(queue)
    if task == "unknown":
        assert [d.reason for d in dead] == ["unknown task 'no.such.task'"]
        return
    assert result is not None
    runs = [line for line in workers.lines() if line.startswith("start t ")]
    assert runs, "the task never ran"
    if task == "fail":
        assert len(dead) == 1 and "failing t" in dead[0].reason
        with pytest.raises(TaskError):
            result.get(timeout=1)
    else:
        assert dead == []
        assert result.get(timeout=1) == "t"
    if crash_at == "before_ack:SUCCESS":
        # The result was stored before the crash: the redelivery settles without rerunning.
        assert len(runs) == 1
