"""The same worker-process scenarios in every pool: results, retries, time limits, shutdown,
the seed case; then what only the processes pool has (children that die, recycling)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import tests.support.pool_tasks  # noqa: F401  (registers the extra tasks on the producer side)
from soloist import App, TaskError
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until
from tests.worker.conftest import POOLS

APP = "tests.support.pool_tasks:app"


def opts(pool: str, *args: str) -> list[str]:
    return ["--pool", pool, *POOLS[pool], *args]


def burst(workers: WorkerProcesses, *args: str) -> subprocess.CompletedProcess[str]:
    return workers.run("worker", "-A", APP, "--burst", *args)


def exit_code(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    proc.wait(timeout=timeout)
    return proc.returncode


def starts(workers: WorkerProcesses, tag: str) -> list[list[str]]:
    """The ledger's `start TAG PID COUNT` lines for a tag, split."""
    return [line.split() for line in workers.lines() if line.startswith(f"start {tag} ")]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # the latter: reaped while being read
        return True


def test_results_retries_failures_and_soft_limit(
    pool: str, workers: WorkerProcesses, sample_app: App
) -> None:
    t = sample_app.tasks
    adds = [t["add"].delay(i, i) for i in range(10)]
    retried = t["retry_once"].delay("again")
    failed = t["fail"].delay("boom")
    soft = t["stepwise_soft"].delay(10)
    coro = t["async_add"].delay(2, 3)
    done = burst(workers, *opts(pool))
    assert done.returncode == 0, done.stderr
    assert [r.get(timeout=1) for r in adds] == [2 * i for i in range(10)]
    assert retried.get(timeout=1) == "again"
    assert [s[3] for s in starts(workers, "again")] == ["0", "1"]  # request.retries
    assert coro.get(timeout=1) == 5
    with pytest.raises(TaskError) as err:
        failed.get(timeout=1)
    assert err.value.exc_type == "RuntimeError"
    with pytest.raises(TaskError) as err:
        soft.get(timeout=1)
    assert err.value.exc_type == "SoftTimeLimitExceeded"
    assert "cleaned up" in workers.lines()
    assert len(sample_app.broker.dead_letters("default")) == 2


def test_seed_case_process_pool_inside_a_task(
    pool: str, workers: WorkerProcesses, sample_app: App
) -> None:
    squares = sample_app.tasks["squares"].delay(10)
    mp = sample_app.tasks["mp_squares"].delay(6)
    threaded = sample_app.tasks["threaded_sum"].delay(8)
    terminated = sample_app.tasks["terminate_child"].delay()
    done = burst(workers, *opts(pool))
    assert done.returncode == 0, done.stderr
    assert squares.get(timeout=1) == [i * i for i in range(10)]
    assert mp.get(timeout=1) == [i * i for i in range(6)]
    assert threaded.get(timeout=1) == sum(2 * i for i in range(8))
    assert terminated.get(timeout=1) == -signal.SIGTERM  # the worker's handlers not inherited


METHODS = ("fork", "forkserver", "spawn")


def test_seed_case_with_every_start_method(
    pool: str, workers: WorkerProcesses, sample_app: App
) -> None:
    """ProcessPoolExecutor and multiprocessing.Pool inside a task, with each start method;
    and a child sent SIGTERM dies of it, whichever way it was started."""
    t = sample_app.tasks
    pools = {(m, k): t["squares_with"].delay(m, k, 6) for m in METHODS for k in ("executor", "mp")}
    terminated = {m: t["terminated_with"].delay(m) for m in METHODS}
    done = burst(workers, *opts(pool))
    assert done.returncode == 0, done.stderr
    for key, result in pools.items():
        assert result.get(timeout=1) == [i * i for i in range(6)], key
    for method, result in terminated.items():
        assert result.get(timeout=1) == -signal.SIGTERM, method


def test_hard_time_limit(pool: str, workers: WorkerProcesses, sample_app: App) -> None:
    """Solo: the worker records the failure and exits 4. Threads and processes: just that
    task is stopped and failed, and the worker goes on."""
    stuck = sample_app.tasks["hard_sleepy"].delay(30)
    after = sample_app.tasks["sleepy"].delay(0, "after")
    proc = workers.start("--prefetch", "2", *opts(pool, "-c", "1"), app=APP)
    with pytest.raises(TaskError) as err:
        stuck.get(timeout=20)
    assert err.value.exc_type == "TimeLimitExceeded"
    (dead,) = sample_app.broker.dead_letters("default")
    assert "hard time limit" in dead.reason
    (start,) = starts(workers, "hard")
    if pool == "solo":
        assert exit_code(proc) == 4
        assert sample_app.broker.depth("default") == 1  # `after`, given back at once
        return
    assert after.get(timeout=10) == "after"
    late = sample_app.tasks["sleepy"].delay(0, "late")
    assert late.get(timeout=10) == "late"
    assert proc.poll() is None, "the worker should have lived on"
    if pool == "processes":
        wait_until(lambda: gone(int(start[2])))  # its child was killed and replaced
        assert starts(workers, "late")[0][2] != start[2]
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0
    assert "end hard" not in workers.lines()


def test_warm_shutdown_finishes_what_runs_and_gives_back_the_rest(
    pool: str, workers: WorkerProcesses, sample_app: App
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    results = {f"t{i}": sleepy.delay(1.5 if i < 2 else 0, f"t{i}") for i in range(6)}
    proc = workers.start("--prefetch", "6", "--lease", "60", *opts(pool), app=APP)
    workers.wait_for("start t0")
    if pool != "solo":
        workers.wait_for("start t1")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0
    ran = {line.split()[1] for line in workers.lines() if line.startswith("start")}
    assert ran == ({"t0"} if pool == "solo" else {"t0", "t1"})
    assert all(results[tag].get(timeout=1) == tag for tag in ran)
    back = sample_app.broker.fetch(["default"], 10, 60, 0.5)  # at once: not after the lease
    assert sorted(d.delivery_count for d in back) == [1] * (6 - len(ran))


def test_cold_shutdown_gives_the_running_delivery_back(
    pool: str, workers: WorkerProcesses, sample_app: App
) -> None:
    running = sample_app.tasks["sleepy"].delay(30, "running")
    proc = workers.start("--lease", "60", *opts(pool), app=APP)
    workers.wait_for("start running")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc, timeout=10) == 3
    assert not running.ready()
    (back,) = sample_app.broker.fetch(["default"], 1, 60, 0.5)
    assert back.delivery_count == 1
    (start,) = starts(workers, "running")
    assert gone(int(start[2]))  # in the processes pool: the child was not left running


def test_recycling_the_worker_process_after_max_tasks(
    workers: WorkerProcesses, sample_app: App
) -> None:
    """In-process pools: the worker itself is replaced, so it finishes warm and exits 5."""
    for i in range(5):
        sample_app.tasks["sleepy"].delay(0, f"t{i}")
    for pool in ("solo", "threads"):
        done = workers.run("worker", "-A", APP, "--pool", pool, "--max-tasks-per-child", "2")
        assert done.returncode == 5, done.stderr
    ran = [line for line in workers.lines() if line.startswith("start t")]
    assert len(ran) == 4
    assert sample_app.broker.depth("default") == 1


def test_processes_child_killed_mid_task_is_replaced_and_its_task_redelivered(
    workers: WorkerProcesses, sample_app: App
) -> None:
    victim = sample_app.tasks["sleepy"].delay(2, "victim")
    # A lease of a minute: the redelivery must not wait for it.
    proc = workers.start("--pool", "processes", "--lease", "60", app=APP)
    workers.wait_for("start victim")
    child = int(starts(workers, "victim")[0][2])

    def heartbeat_shows_it() -> bool:
        beats = [json.loads(info) for info, _ in sample_app.broker.workers().values()]
        return any(r["task"] == "sleepy" for b in beats for r in b["running"])

    wait_until(heartbeat_shows_it, timeout=10)
    os.kill(child, signal.SIGKILL)
    assert victim.get(timeout=20) == "victim"
    (first, second) = starts(workers, "victim")
    assert second[3] == "2" and second[2] != first[2]
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0


def test_processes_children_recycled_by_tasks_and_memory(
    workers: WorkerProcesses, sample_app: App
) -> None:
    t = sample_app.tasks
    t["sleepy"].delay(0, "a")
    t["hog"].delay(150, "hog")  # past 100 MB: its child retires after this task
    for tag in "bcde":
        t["sleepy"].delay(0, tag)
    limits = ["--max-tasks-per-child", "3", "--max-memory-per-child", "100"]
    done = burst(workers, "--pool", "processes", *limits)
    assert done.returncode == 0, done.stderr
    pids = [s[2] for s in map(str.split, workers.lines()) if s[0] == "start"]
    assert len(pids) == 6
    assert pids[0] == pids[1] != pids[2] == pids[3] == pids[4] != pids[5]


def test_processes_gil_holding_task_is_stopped_without_the_watchdog(
    workers: WorkerProcesses, sample_app: App
) -> None:
    """The worker's keeper is not starved by a child's C call: it kills just the child."""
    hog = sample_app.tasks["gil_hog"].delay()
    proc = workers.start("--pool", "processes", app=APP)
    with pytest.raises(TaskError) as err:
        hog.get(timeout=20)
    assert err.value.exc_type == "TimeLimitExceeded"
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0


def test_processes_worker_killed_leaves_no_child_running(
    workers: WorkerProcesses, sample_app: App
) -> None:
    sample_app.tasks["sleepy"].delay(30, "orphan")
    proc = workers.start("--pool", "processes", app=APP)
    workers.wait_for("start orphan")
    child = int(starts(workers, "orphan")[0][2])
    proc.kill()
    proc.wait()
    wait_until(lambda: gone(child), timeout=10)


def test_worker_level_time_limits(pool: str, workers: WorkerProcesses, sample_app: App) -> None:
    """--soft-time-limit and --time-limit apply to tasks that set no limit of their own."""
    soft = sample_app.tasks["sleepy"].delay(2, "soft")
    done = burst(workers, *opts(pool, "--soft-time-limit", "0.5"))
    assert done.returncode == 0, done.stderr
    with pytest.raises(TaskError) as err:
        soft.get(timeout=1)
    assert err.value.exc_type == "SoftTimeLimitExceeded"
    hard = sample_app.tasks["sleepy"].delay(30, "hard")
    proc = workers.start(*opts(pool, "-c", "1", "--time-limit", "1"), app=APP)
    with pytest.raises(TaskError) as err:
        hard.get(timeout=20)
    assert err.value.exc_type == "TimeLimitExceeded"
    if pool == "solo":
        assert exit_code(proc) == 4
    else:
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
