"""What a SIGKILL runs again: only the task that was running, since each task is settled
as it ends (`--settle-batch 1`, the default); with `--settle-batch N` the ended tasks
whose settles were held for a batch run again too, the documented trade-off."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soloist import App
from tests.conftest import WorkerProcesses
from tests.support.broker_matrix import BROKERS, on_broker

QUICK = 8


@pytest.fixture(params=BROKERS)
def queue(
    request: pytest.FixtureRequest, workers: WorkerProcesses, sample_app: App, tmp_path: Path
) -> Iterator[str]:
    """Points the producer and the workers at one broker; the queue to use on it."""
    with on_broker(request.param, "settle", sample_app, workers, tmp_path) as queue:
        yield queue


def _runs_after_kill(
    workers: WorkerProcesses, sample_app: App, queue: str, *opts: str
) -> dict[str, int]:
    """QUICK tasks, then one that SIGKILLs the worker, all fetched in one prefetch; then a
    second worker drains the queue. How often each task started."""
    for i in range(QUICK):
        sample_app.tasks["sleepy"].apply_async((0, f"q{i}"), queue=queue)
    sample_app.tasks["killed_first"].apply_async(("k",), queue=queue)
    worker = ["worker", "-A", "tests.support.sample_app:app", "-Q", queue, "--lease", "1"]
    killed = workers.run(*worker, "--prefetch", str(QUICK + 2), *opts)
    assert killed.returncode == -9, killed.stderr
    time.sleep(1.2)  # the dead worker's lease lapses
    done = workers.run(*worker, "--burst")
    assert done.returncode == 0, done.stderr
    assert sample_app.broker.depth(queue) == 0
    return collections.Counter(
        line.split()[1] for line in workers.lines() if line.startswith("start")
    )


def test_a_kill_reruns_only_the_running_task(
    workers: WorkerProcesses, sample_app: App, queue: str
) -> None:
    runs = _runs_after_kill(workers, sample_app, queue)
    assert runs == {**{f"q{i}": 1 for i in range(QUICK)}, "k": 2}


def test_a_settle_batch_reruns_what_it_held(
    workers: WorkerProcesses, sample_app: App, queue: str
) -> None:
    runs = _runs_after_kill(workers, sample_app, queue, "--settle-batch", str(QUICK + 2))
    assert runs == {**{f"q{i}": 2 for i in range(QUICK)}, "k": 2}
