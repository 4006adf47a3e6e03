"""Poison control: a task that kills its worker is dead-lettered after max_deliveries,
while normal tasks keep flowing through the supervisor's other replicas."""

from __future__ import annotations

import signal
from pathlib import Path

import tests.support.pool_tasks  # noqa: F401  (registers the crash task on the producer side)
from soloist import App
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until

APP = "tests.support.pool_tasks:app"


def test_poison_is_dead_lettered_and_nothing_crash_loops(
    workers: WorkerProcesses, sample_app: App, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/poison.db?max_deliveries=3"
    sample_app.configure(url, url)
    workers.use(url)
    sample_app.tasks["crash"].apply_async(priority=9)
    normal = [sample_app.tasks["sleepy"].delay(0, f"n{i}") for i in range(1000)]
    sup = workers.start("--replicas", "2", "--lease", "1", "--prefetch", "4", app=APP)
    try:
        assert [r.get(timeout=120) for r in normal] == [f"n{i}" for i in range(1000)]
        wait_until(
            lambda: sample_app.broker.dead_letters("default"), 60, "the poison's dead letter"
        )
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0
    (dead,) = sample_app.broker.dead_letters("default")
    assert "delivered 3 times without being settled" in dead.reason
    crashes = [line for line in workers.lines() if line.startswith("crash")]
    assert len(crashes) == 3, crashes
    assert workers.output(sup).count("exited with code 7") == 3
