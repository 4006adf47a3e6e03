"""Steps of the wall clock do not move leases, delays or hard time limits.

Each test steps the wall clock of one worker process only (tests/support/clock_step.py), never the
machine's: +120 s must not make a healthy task's lease look lapsed (to another worker, or
to the worker's own other threads) nor make the watchdog kill a healthy worker; -3,600 s
must not hide a dead worker's task for an hour.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from soloist import App
from tests.conftest import ROOT, WorkerProcesses
from tests.support import clock_step
from tests.support import sample_app as sample


@pytest.fixture
def stepped(tmp_path: Path, workers: WorkerProcesses, sqlite_url: str) -> Path:
    """The step file; `start_stepped` starts workers whose wall clock reads through it."""
    site = tmp_path / "site"
    site.mkdir()
    clock_step.install(site)
    path = tmp_path / "clock-step"
    clock_step.step(path, 0)
    return path


def start_stepped(workers: WorkerProcesses, path: Path, *args: str) -> subprocess.Popen[str]:
    plain = workers.env
    workers.env = {
        **plain,
        "PYTHONPATH": f"{path.parent / 'site'}:{ROOT}",
        "SOLOIST_TEST_CLOCK_STEP": str(path),
    }
    try:
        return workers.start(*args)
    finally:
        workers.env = plain


def starts(workers: WorkerProcesses, tag: str) -> list[str]:
    return [line for line in workers.lines() if line.startswith(f"start {tag} ")]


def test_a_forward_step_does_not_run_a_healthy_task_twice(
    workers: WorkerProcesses, stepped: Path, sample_app: App
) -> None:
    """A threads worker with a free thread, and a second worker, both stepped +120 s while
    the task runs: neither claims it again (its lease has 10 s left on the shared clock)."""
    result = sample.sleepy.delay(2.0, "a")
    first = start_stepped(workers, stepped, "--pool", "threads", "-c", "2", "--lease", "10")
    workers.wait_for("start a")
    second = start_stepped(workers, stepped, "--lease", "10")
    clock_step.step(stepped, 120)
    assert result.get(timeout=20) == "a"
    assert [line.split()[-1] for line in starts(workers, "a")] == ["1"], workers.lines()
    assert sample.add.delay(1, 2).get(timeout=20) == 3  # both still serve
    assert first.poll() is None and second.poll() is None


def test_a_forward_step_does_not_make_the_watchdog_kill_a_healthy_worker(
    workers: WorkerProcesses, stepped: Path, sample_app: App
) -> None:
    result = sample.sleepy.delay(2.0, "b")
    proc = start_stepped(workers, stepped, "--time-limit", "30")
    workers.wait_for("start b")
    clock_step.step(stepped, 120)
    assert result.get(timeout=20) == "b"
    assert proc.poll() is None, workers.output(proc)
    assert "TimeLimitExceeded" not in workers.output(proc)


def test_a_backward_step_does_not_hide_a_dead_workers_task(
    workers: WorkerProcesses, stepped: Path, sample_app: App
) -> None:
    """A worker dies mid-task; the other, its clock an hour behind, takes the task over
    once the 2 s lease lapses, not an hour later."""
    result = sample.sleepy.delay(1.0, "c")
    doomed = workers.start("--lease", "2")
    workers.wait_for("start c")
    doomed.kill()
    clock_step.step(stepped, -3600)
    start_stepped(workers, stepped, "--lease", "2")
    assert result.get(timeout=20) == "c"
    assert [line.split()[-1] for line in starts(workers, "c")] == ["1", "2"]


def test_the_memory_broker_counts_leases_and_delays_on_the_monotonic_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from soloist.brokers.memory import MemoryBroker

    broker = MemoryBroker()
    broker.publish("q", b"leased")
    broker.publish("q", b"later", delay=60)
    (held,) = broker.fetch(["q"], 10, 30, 0)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)
    assert broker.fetch(["q"], 10, 30, 0) == []  # neither the lease nor the delay ran out
    assert broker.ack(held)
