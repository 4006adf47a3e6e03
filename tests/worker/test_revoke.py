"""Revoking: skipped before it starts (also by a worker started later), stopped while it
runs in every pool, recorded as REVOKED; with real worker processes."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from soloist import App, TaskRevoked
from soloist.results.base import Revocation
from soloist.worker.revocation import Revocations
from tests.conftest import WorkerProcesses


def test_revoked_before_start_is_skipped_by_a_worker_started_later(
    workers: WorkerProcesses, sample_app: App
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    doomed, kept = sleepy.delay(0, "doomed"), sleepy.delay(0, "kept")
    assert doomed.revoke()
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    assert kept.get(timeout=5) == "kept"
    assert doomed.state == "REVOKED"
    with pytest.raises(TaskRevoked):
        doomed.get(timeout=1)
    assert not any("doomed" in line for line in workers.lines())
    assert f"task sleepy[{doomed.id}] revoked before it started" in done.stderr
    assert sample_app.broker.depth("default") == 0


@pytest.mark.parametrize("pool", ["solo", "threads", "processes"])
def test_terminate_stops_a_running_task(
    workers: WorkerProcesses, sample_app: App, pool: str
) -> None:
    proc = workers.start("--pool", pool)
    long = sample_app.tasks["sleepy"].delay(60, "long")
    workers.wait_for("start long")
    t0 = time.monotonic()
    assert long.revoke(terminate=True)
    with pytest.raises(TaskRevoked):
        long.get(timeout=10)
    # The worker acked it and goes on with the next task.
    assert sample_app.tasks["add"].delay(2, 3).get(timeout=10) == 5
    assert time.monotonic() - t0 < 30
    assert proc.poll() is None
    assert not any(line.startswith("end long") for line in workers.lines())
    assert sample_app.broker.stats("default").in_flight == 0
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_revoke_cli(workers: WorkerProcesses, sample_app: App) -> None:
    finished = sample_app.tasks["add"].delay(1, 1)
    pending = sample_app.tasks["add"].delay(1, 2)
    sample_app.results.put(finished.id, "SUCCESS", sample_app.codec.dumps({"value": 2}), 60)
    done = workers.run("revoke", "-A", "tests.support.sample_app:app", pending.id, finished.id)
    assert done.returncode == 1
    assert f"{pending.id} revoked" in done.stdout
    assert f"{finished.id} not revoked: it already finished (SUCCESS)" in done.stdout
    assert pending.state == "REVOKED"


def test_sync_adds_new_revocations_and_forgets_those_past_the_result_ttl() -> None:
    log: list[Revocation] = []
    store = SimpleNamespace(
        revocation_mark=lambda: None,
        revoked_since=lambda since: [r for r in log if r.at >= since],
    )
    app: Any = SimpleNamespace(results=store, result_ttl=60.0)
    revoked = Revocations(app)
    now = time.time()
    log += [Revocation("stale", now - 61, False), Revocation("fresh", now, False)]
    revoked.sync()
    assert "fresh" in revoked and "stale" not in revoked
    log.append(Revocation("terminated", now, True))
    revoked.sync()
    assert sorted(revoked) == ["fresh", "terminated"]
    assert revoked.get("terminated") == log[-1]
