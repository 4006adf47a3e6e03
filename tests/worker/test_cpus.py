"""The host-wide CPU budget: `soloist worker --cpus N` and `@app.task(cpus=K)`, across
worker processes, with a holder SIGKILLed, while a task waits."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soloist import App, ConfigurationError
from soloist.worker.cpus import CpuBudget
from tests.conftest import WorkerProcesses
from tests.worker.test_pools import APP, exit_code, opts, wait_until


@pytest.fixture
def budget_dir(workers: WorkerProcesses, tmp_path: Path) -> str:
    """The runtime directory of this test's workers: a budget of their own."""
    workers.env["SOLOIST_RUNTIME_DIR"] = str(tmp_path / "run")
    return str(tmp_path / "run" / "cpus")


def test_a_killed_holders_cpus_come_back(tmp_path: Path) -> None:
    directory = str(tmp_path / "cpus")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from soloist.worker.cpus import CpuBudget\n"
            f"grant = CpuBudget(3, {directory!r}).acquire(2)\n"
            "print(grant.cpus, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "2"
        budget = CpuBudget(3, directory)
        assert budget.free() == 1
        assert budget.try_acquire(2) is None  # all or nothing: the free one is not taken
        assert budget.free() == 1
    finally:
        holder.kill()
        holder.communicate()
    wait_until(lambda: budget.free() == 3)
    grant = budget.try_acquire(3)
    assert grant is not None and grant.cpus == 3
    grant.release()


@pytest.mark.parametrize("pool", ["solo", "threads", "processes"])
def test_tasks_share_the_budget_across_workers(
    pool: str, workers: WorkerProcesses, sample_app: App, budget_dir: str
) -> None:
    """Two workers, two slots each, a budget of 2: only one 2-CPU task runs at a time."""
    results = [sample_app.tasks["cpu_pair"].delay(f"t{i}", 0.3) for i in range(4)]
    greedy = sample_app.tasks["cpu_greedy"].delay()
    plain = sample_app.tasks["add"].delay(1, 2)
    for _ in range(2):
        workers.start("--cpus", "2", *opts(pool), app=APP)
    assert [r.get(timeout=60) for r in results] == [2] * 4
    assert greedy.get(timeout=30) == 2  # asked 64 of 2: granted the whole budget
    assert plain.get(timeout=30) == 3
    runs = [line.split() for line in workers.lines() if line.startswith("cpus ")]
    assert len(runs) == 8
    # Never two at once: each start is followed by its own end.
    for begin, end in zip(runs[::2], runs[1::2], strict=True):
        assert begin[1] == "start" and end[1] == "end" and begin[2] == end[2]
    assert CpuBudget(2, budget_dir).free() == 2


def test_a_waiting_task_keeps_its_lease_and_is_not_running(
    workers: WorkerProcesses, sample_app: App, budget_dir: str
) -> None:
    held = CpuBudget(2, budget_dir).acquire(1)
    assert held is not None
    waiting = sample_app.tasks["cpu_pair"].delay("waiting", 0)
    proc = workers.start("--cpus", "2", "--lease", "1", app=APP)

    def beats() -> list[dict[str, object]]:
        return [json.loads(info) for info, _ in sample_app.broker.workers().values()]

    wait_until(lambda: bool(beats()))
    # Three leases long: renewed all along, so no other consumer gets the message, and
    # the worker reports it running nothing.
    until = time.monotonic() + 3
    while time.monotonic() < until:
        assert sample_app.broker.fetch(["default"], 1, 60, 0) == []
        assert all(b["running"] == [] for b in beats())
        time.sleep(0.2)
    assert not waiting.ready()
    held.release()
    assert waiting.get(timeout=20) == 2
    proc.terminate()
    assert exit_code(proc) == 0


@pytest.mark.parametrize("pool", ["solo", "threads", "processes"])
def test_warm_shutdown_gives_back_a_task_waiting_for_cpus(
    pool: str, workers: WorkerProcesses, sample_app: App, budget_dir: str
) -> None:
    held = CpuBudget(2, budget_dir).acquire(2)
    assert held is not None
    sample_app.tasks["cpu_pair"].delay("never", 0)
    proc = workers.start("--cpus", "2", *opts(pool), app=APP)
    wait_until(lambda: sample_app.broker.depth("default") == 0)  # fetched, waiting
    proc.terminate()
    assert exit_code(proc) == 0
    (back,) = sample_app.broker.fetch(["default"], 1, 60, 0.5)
    assert back.delivery_count == 1  # given back, not counted as a delivery that died
    held.release()


def test_bad_cpus(workers: WorkerProcesses, sample_app: App) -> None:
    done = workers.run("worker", "-A", APP, "--cpus", "0")
    assert done.returncode == 2 and "--cpus" in done.stderr
    with pytest.raises(ConfigurationError, match="cpus"):
        sample_app.task(name="bad_cpus", cpus=0)(lambda: None)
