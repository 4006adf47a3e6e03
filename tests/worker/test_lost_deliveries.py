"""A delivery whose pool child died is given back at once, on every broker (issue 23)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App
from tests.conftest import WorkerProcesses
from tests.support import misbehaving
from tests.support.broker_matrix import BROKERS, on_broker


@pytest.fixture(params=BROKERS)
def queue(
    request: pytest.FixtureRequest, workers: WorkerProcesses, tmp_path: Path
) -> Iterator[str]:
    """Points tests.support.misbehaving's app and the workers at one broker; a queue on it."""
    with on_broker(request.param, "lost", misbehaving.app, workers, tmp_path) as queue:
        yield queue
    misbehaving.app.close()


def test_a_child_that_dies_has_its_delivery_run_again_at_once(
    workers: WorkerProcesses, queue: str
) -> None:
    """The lease is long (on RabbitMQ, the channel's life): only an immediate give-back
    lets the task run again while the worker lives."""
    app: App = misbehaving.app
    exiting = app.tasks["os_exit"].apply_async((7,), queue=queue)
    worker = workers.start(
        "-Q",
        queue,
        "--pool",
        "processes",
        "-c",
        "1",
        "--lease",
        "120",
        app="tests.support.misbehaving:app",
    )
    assert exiting.get(timeout=30) == "survived"
    counts = [line.split()[3] for line in workers.lines() if line.startswith("start os_exit")]
    assert counts == ["1", "2"]
    assert "given back" in workers.output(worker)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
