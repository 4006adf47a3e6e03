"""Fencing: a worker frozen past its lease cannot settle or record what another finished."""

from __future__ import annotations

import signal

from soloist import App
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until


def test_a_frozen_worker_is_fenced_off(workers: WorkerProcesses, sample_app: App) -> None:
    result = sample_app.tasks["whoami"].delay(1.5)
    frozen = workers.start("--lease", "1")
    workers.wait_for("start whoami")
    frozen.send_signal(signal.SIGSTOP)
    try:
        other = workers.start("--lease", "1")
        assert result.get(timeout=20) == other.pid
    finally:
        frozen.send_signal(signal.SIGCONT)
    # The frozen worker wakes, finishes its run and tries to settle.
    wait_until(lambda: "outcome dropped" in workers.output(frozen), 20, "the refused settle")
    assert result.get(timeout=1) == other.pid, "a finished result must never flip back"
    for proc in (frozen, other):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    log = workers.output(frozen)
    assert "whoami[" in log and "lease lost, another worker has it; outcome dropped" in log
    assert "1 stale" in log
    assert sample_app.broker.depth("default") == 0
    assert sample_app.broker.dead_letters("default") == []
    starts = [line.split()[2] for line in workers.lines()]
    assert starts == [str(frozen.pid), str(other.pid)]
