"""The solo worker as real processes on a SQLite file: what only processes can show."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from soloist import App, TaskError
from soloist.brokers.sqlite import SQLiteBroker
from tests.conftest import WorkerProcesses
from tests.support.waiting import wait_until


def exit_code(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    proc.wait(timeout=timeout)
    return proc.returncode


def test_burst_worker_runs_tasks_and_exits_0(workers: WorkerProcesses, sample_app: App) -> None:
    results = [sample_app.tasks["add"].delay(i, i) for i in range(20)]
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    assert [r.get(timeout=1) for r in results] == [2 * i for i in range(20)]


def test_bad_input_is_dead_lettered_and_the_worker_goes_on(
    workers: WorkerProcesses, sample_app: App
) -> None:
    broker = sample_app.broker
    broker.publish("default", b"\xff\xfegarbage")
    broker.publish("default", b'j{"v":1,"id":"u1","task":"no.such.task","args":[],"kwargs":{}}')
    broker.publish("default", b'j{"v":1,"id":"a1","task":"add","args":[1],"kwargs":{}}')
    broker.publish("default", b"p" + b"\x80\x04K\x01.")  # a pickle: refused unread
    broker.publish("default", b"j" + b"[" * 50_000 + b"]" * 50_000)
    broker.publish("default", b"j" + b" " * (2 * 1024 * 1024))
    good = sample_app.tasks["add"].delay(2, 3)
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    assert good.get(timeout=1) == 5
    reasons = [d.reason for d in broker.dead_letters("default")]
    assert len(reasons) == 6
    assert reasons[0].startswith("undecodable message")
    assert reasons[1] == "unknown task 'no.such.task'"
    assert reasons[2].startswith("arguments do not fit add(a, b): missing")
    assert "pickle body refused" in reasons[3]
    assert reasons[4].startswith("undecodable message")
    assert "over the size limit" in reasons[5]
    assert "Traceback" not in done.stderr
    assert sum("] dead-lettered:" in line for line in done.stderr.splitlines()) == 6


def test_long_task_is_not_redelivered_while_it_runs(
    workers: WorkerProcesses, sample_app: App
) -> None:
    result = sample_app.tasks["sleepy"].delay(5, "long")
    first = workers.start("--lease", "1")
    workers.wait_for("start long")
    second = workers.start("--lease", "1")
    result.get(timeout=30)
    time.sleep(1.5)  # a redelivery, if any, would have started by now
    starts = [line for line in workers.lines() if line.startswith("start")]
    assert len(starts) == 1, starts
    for proc in (first, second):
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0


def test_sigkill_mid_task_another_worker_runs_it_with_delivery_count_2(
    workers: WorkerProcesses, sample_app: App
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    victim_result = sleepy.delay(3, "victim")
    first = workers.start("--lease", "1")
    workers.wait_for("start victim")
    others = [sleepy.delay(0.05, f"other{i}") for i in range(5)]
    first.kill()
    first.wait()
    second = workers.start("--lease", "1")
    assert victim_result.get(timeout=30) == "victim"
    assert [r.get(timeout=10) for r in others] == [f"other{i}" for i in range(5)]
    lines = workers.lines()
    victim_starts = [line.split() for line in lines if line.startswith("start victim")]
    assert [s[3] for s in victim_starts] == ["1", "2"]
    assert victim_starts[1][2] == str(second.pid)
    for i in range(5):
        assert sum(line.startswith(f"start other{i} ") for line in lines) == 1
    second.send_signal(signal.SIGTERM)
    assert exit_code(second) == 0


def test_a_task_that_kills_every_worker_is_dead_lettered(
    workers: WorkerProcesses, sample_app: App, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/poison.db?max_deliveries=2"
    sample_app.configure(url, url)
    workers.use(url)
    killer = sample_app.tasks["sleepy"].delay(60, "poison")
    for _ in range(2):
        proc = workers.start("--lease", "0.5")
        workers.wait_for("start poison", timeout=20)
        proc.kill()
        proc.wait()
        workers.ledger.write_text("")
    time.sleep(0.8)  # the last lease lapses: a burst worker must see the message due
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst", "--lease", "0.5")
    assert done.returncode == 0, done.stderr
    assert workers.lines() == []  # not run a third time
    (dead,) = sample_app.broker.dead_letters("default")
    assert "delivered 2 times" in dead.reason
    assert not killer.ready()


def test_soft_time_limit_raises_inside_the_task(workers: WorkerProcesses, sample_app: App) -> None:
    result = sample_app.tasks["soft_limited"].delay(10)
    t0 = time.monotonic()
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 8
    assert workers.lines() == ["cleaned up"]
    with pytest.raises(TaskError) as err:
        result.get(timeout=1)
    assert err.value.exc_type == "SoftTimeLimitExceeded"


def test_hard_time_limit_records_failure_and_ends_the_worker(
    workers: WorkerProcesses, sample_app: App
) -> None:
    result = sample_app.tasks["hard_limited"].delay(30)
    after = sample_app.tasks["add"].delay(1, 1)
    t0 = time.monotonic()
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--prefetch", "2")
    assert done.returncode == 4, done.stderr
    assert time.monotonic() - t0 < 10
    with pytest.raises(TaskError) as err:
        result.get(timeout=1)
    assert err.value.exc_type == "TimeLimitExceeded"
    (dead,) = sample_app.broker.dead_letters("default")
    assert "hard time limit" in dead.reason
    # The prefetched task was given back at once, not left to a lapsing lease.
    assert sample_app.broker.depth("default") == 1
    assert workers.run("worker", "-A", "tests.support.sample_app:app", "--burst").returncode == 0
    assert after.get(timeout=1) == 2


def test_hard_time_limit_in_c_code_holding_the_gil(
    workers: WorkerProcesses, sample_app: App
) -> None:
    result = sample_app.tasks["gil_hog"].delay()
    t0 = time.monotonic()
    done = workers.run("worker", "-A", "tests.support.sample_app:app")
    assert time.monotonic() - t0 < 15
    assert done.returncode == -signal.SIGKILL, done.stderr
    with pytest.raises(TaskError) as err:
        result.get(timeout=5)
    assert err.value.exc_type == "TimeLimitExceeded"
    (dead,) = sample_app.broker.dead_letters("default")
    assert "hard time limit" in dead.reason


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_warm_shutdown_finishes_the_task_and_gives_back_the_prefetched(
    workers: WorkerProcesses, sample_app: App, sig: signal.Signals
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    running = sleepy.delay(1.5, "running")
    queued = [sleepy.delay(0, f"queued{i}") for i in range(4)]
    proc = workers.start("--prefetch", "5", "--lease", "60")
    workers.wait_for("start running")
    proc.send_signal(sig)
    assert exit_code(proc) == 0
    assert running.get(timeout=1) == "running"
    assert not any(r.ready() for r in queued)
    broker = sample_app.broker
    back = broker.fetch(["default"], 10, 60, 0.5)  # at once: not after the 60 s lease
    assert sorted(d.delivery_count for d in back) == [1, 1, 1, 1]
    broker.release(back)


def test_warm_shutdown_while_idle(workers: WorkerProcesses) -> None:
    proc = workers.start()
    wait_until(lambda: " ready: " in workers.output(proc), 20, "the worker's ready line")
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc, timeout=5) == 0


def test_heartbeat_shows_the_running_task(workers: WorkerProcesses, sample_app: App) -> None:
    import json

    sample_app.tasks["sleepy"].delay(4, "beat")
    proc = workers.start()
    workers.wait_for("start beat")

    def beating() -> dict[str, Any] | None:
        # A heartbeat sent while the task blocks the main thread (it runs 4 s; one every 2).
        for info, _ in sample_app.broker.workers().values():
            status: dict[str, Any] = json.loads(info)
            if status["running"]:
                return status
        return None

    status = wait_until(beating, 3.5, "a heartbeat naming the running task")
    assert status["pid"] == proc.pid and status["pool"] == "solo"
    assert [r["task"] for r in status["running"]] == ["sleepy"]
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0
    assert sample_app.broker.workers() == {}


def test_async_tasks_share_one_event_loop_and_honour_soft_limits(
    workers: WorkerProcesses, sample_app: App
) -> None:
    add = sample_app.tasks["async_add"].delay(2, 3)
    loops = [sample_app.tasks["async_loop_id"].delay() for _ in range(3)]
    slow = sample_app.tasks["async_slow"].delay()
    done = workers.run("worker", "-A", "tests.support.sample_app:app", "--burst")
    assert done.returncode == 0, done.stderr
    assert add.get(timeout=1) == 5
    assert len({r.get(timeout=1) for r in loops}) == 1
    with pytest.raises(TaskError) as err:
        slow.get(timeout=1)
    assert err.value.exc_type == "SoftTimeLimitExceeded"


def test_several_workers_on_one_file_run_each_task_once(
    workers: WorkerProcesses, sample_app: App
) -> None:
    sleepy = sample_app.tasks["sleepy"]
    results = [sleepy.delay(0, f"t{i}") for i in range(150)]
    procs = [workers.start("--burst", "--prefetch", "3") for _ in range(3)]
    assert [exit_code(p, timeout=60) for p in procs] == [0, 0, 0]
    assert [r.get(timeout=1) for r in results] == [f"t{i}" for i in range(150)]
    starts = sorted(line.split()[1] for line in workers.lines() if line.startswith("start"))
    assert starts == sorted(f"t{i}" for i in range(150))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_worker_does_not_spin(workers: WorkerProcesses) -> None:
    proc = workers.start()
    wait_until(lambda: " ready: " in workers.output(proc), 20, "the worker's ready line")
    before = _cpu_seconds(proc.pid)
    time.sleep(3)
    used = _cpu_seconds(proc.pid) - before
    assert used < 0.3, f"an idle worker used {used:.2f}s of CPU in 3s"


def test_sqlite_claim_is_exclusive_across_processes(tmp_path: Path) -> None:
    """Many processes claiming from one file at once: each message is won exactly once."""
    import multiprocessing

    url = f"sqlite:///{tmp_path}/claims.db"
    # Enough that one process cannot drain them all before the others wake (a claim of
    # two and their acks take ~0.1 ms): the processes must really race.
    count = 6000
    SQLiteBroker(url).publish_many([("q", b"%d" % i, 0, 0) for i in range(count)])
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 3  # spawned processes start slowly: let them claim together
    with ctx.Pool(4) as pool:
        won = pool.starmap(_claim_all, [(url, start)] * 4)
    flat = [body for bodies in won for body in bodies]
    assert sorted(flat) == sorted(b"%d" % i for i in range(count))
    assert sum(1 for w in won if w) >= 2, "the claims should have raced"


def _claim_all(url: str, start: float) -> list[bytes]:
    broker = SQLiteBroker(url)
    time.sleep(max(start - time.time(), 0))
    won = []
    while got := broker.fetch(["q"], 2, 60, 0.2):
        won.extend(d.body for d in got)
        for d in got:
            assert broker.ack(d)
    return won


def test_results_do_not_wait_for_a_long_task_behind_them(
    workers: WorkerProcesses, sample_app: App
) -> None:
    """Acks are batched while prefetched work remains; the keeper still settles finished
    tasks while the main thread runs a long one."""
    fast = [sample_app.tasks["add"].delay(i, i) for i in range(60)]
    sample_app.tasks["sleepy"].delay(6, "long")
    proc = workers.start()
    workers.wait_for("start long")
    assert [r.get(timeout=2) for r in fast] == [2 * i for i in range(60)]
    assert not any(line.startswith("end long") for line in workers.lines())
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0
