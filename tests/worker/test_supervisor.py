"""`soloist worker --replicas N`: the supervisor, with real replicas and real signals."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

import tests.support.pool_tasks  # noqa: F401  (registers the extra tasks on the producer side)
from soloist import App
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until
from tests.test_cli import assert_one_line_error

APP = "tests.support.pool_tasks:app"


def wait_output(
    workers: WorkerProcesses,
    proc: subprocess.Popen[str],
    text: str,
    count: int = 1,
    timeout: float = 20,
) -> str:
    """Wait until the supervisor's output holds `text` `count` times; returns the output."""
    wait_until(lambda: workers.output(proc).count(text) >= count, timeout, f"{text!r} x{count}")
    out = workers.output(proc)
    return out


def pids(workers: WorkerProcesses, prefix: str = "start") -> list[str]:
    return [line.split()[2] for line in workers.lines() if line.startswith(prefix)]


def test_replicas_share_the_work_and_a_burst_ends_them(
    workers: WorkerProcesses, sample_app: App
) -> None:
    results = [sample_app.tasks["sleepy"].delay(0.3, f"t{i}") for i in range(12)]
    done = workers.run("worker", "-A", APP, "--replicas", "2", "--burst", timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r.get(timeout=1) for r in results] == [f"t{i}" for i in range(12)]
    assert len(set(pids(workers))) == 2  # two processes, each with its own connection
    assert done.stderr.count(") started") == 2
    assert done.stderr.count("exited with code 0") == 2


def test_a_killed_replica_is_restarted_and_sigterm_shuts_all_down_warm(
    workers: WorkerProcesses, sample_app: App
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    victim = sleepy.delay(2, "victim")
    sup = workers.start("--replicas", "2", "--lease", "1", app=APP)
    workers.wait_for("start victim")
    replica = int(pids(workers, "start victim")[0])
    subprocess.run(["kill", "-KILL", str(replica)], check=True)
    out = wait_output(workers, sup, ") started", count=3)
    assert f"(pid {replica}) exited with code -9 (killed by SIGKILL); restarting in 1.0s" in out
    assert victim.get(timeout=30) == "victim"  # redelivered once its lease lapsed
    assert [line.split()[3] for line in workers.lines() if "start victim" in line] == ["1", "2"]
    last = sleepy.delay(1.5, "last")
    workers.wait_for("start last")
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert last.get(timeout=1) == "last"  # the running task finished
    out = workers.output(sup)
    assert "shutting down 2 replicas (warm)" in out
    assert out.count("exited with code 0") == 2


def test_second_sigterm_is_a_cold_shutdown(workers: WorkerProcesses, sample_app: App) -> None:
    running = sample_app.tasks["sleepy"].delay(30, "running")
    sup = workers.start("--replicas", "2", "--lease", "60", app=APP)
    workers.wait_for("start running")
    sup.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 3
    assert "exited with code 3 (cold shutdown)" in workers.output(sup)
    assert not running.ready()
    (back,) = sample_app.broker.fetch(["default"], 1, 60, 0.5)
    assert back.delivery_count == 1


def test_a_crash_loop_backs_off(workers: WorkerProcesses, sample_app: App) -> None:
    for _ in range(6):
        sample_app.tasks["crash"].delay()
    sup = workers.start("--replicas", "1", "--lease", "60", app=APP)
    out = wait_output(workers, sup, "restarting in 4.0s", timeout=30)
    delays = re.findall(r"exited with code 7; restarting in ([\d.]+)s", out)
    assert delays == ["1.0", "2.0", "4.0"]
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    assert len(workers.lines()) == 3  # one crash per start: no spinning


def test_replicas_recycled_after_max_tasks(workers: WorkerProcesses, sample_app: App) -> None:
    results = [sample_app.tasks["sleepy"].delay(0, f"t{i}") for i in range(5)]
    args = ["--replicas", "1", "--max-tasks-per-child", "2", "--burst"]
    done = workers.run("worker", "-A", APP, *args, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r.get(timeout=1) for r in results] == [f"t{i}" for i in range(5)]
    assert done.stderr.count(" recycled: ") == 2  # (the ready lines name the tmp path too)
    ran = pids(workers)
    assert ran[0] == ran[1] != ran[2] == ran[3] != ran[4]


def test_autoscale_by_queue_depth_and_idleness(workers: WorkerProcesses, sample_app: App) -> None:
    results = [sample_app.tasks["sleepy"].delay(0.5, f"t{i}") for i in range(8)]
    sup = workers.start("--autoscale", "1,2", app=APP)
    wait_output(workers, sup, "adding one")
    assert [r.get(timeout=30) for r in results] == [f"t{i}" for i in range(8)]
    assert len(set(pids(workers))) == 2
    wait_output(workers, sup, "queues idle, stopping replica 2", timeout=30)
    wait_output(workers, sup, "exited with code 0")
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--replicas", "0"],
        ["--autoscale", "2,1"],
        ["--autoscale", "x"],
        ["--autoscale", "0,2"],
        ["--replicas", "3", "--autoscale", "1,2"],
        ["--max-memory-per-child", "0"],
    ],
)
def test_bad_supervisor_options(workers: WorkerProcesses, args: list[str]) -> None:
    assert_one_line_error(workers.run("worker", "-A", APP, *args), 2)
