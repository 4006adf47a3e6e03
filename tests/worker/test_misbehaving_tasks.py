"""A task cannot end or stall the worker, whatever it does to its process (issue 23).

Real worker processes in every pool, running the tasks of tests.support.misbehaving.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from soloist import App, TaskError
from tests.conftest import WorkerProcesses
from tests.support import misbehaving
from tests.support.waiting import wait_until
from tests.worker.conftest import POOLS

APP = "tests.support.misbehaving:app"


@pytest.fixture
def bad_app(sqlite_url: str) -> Iterator[App]:
    misbehaving.app.configure(sqlite_url, sqlite_url)
    yield misbehaving.app
    misbehaving.app.close()


def burst(workers: WorkerProcesses, pool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return workers.run("worker", "-A", APP, "--burst", "--pool", pool, *POOLS[pool], *args)


def test_exits_and_exceptions_that_cannot_be_printed_fail_only_their_task(
    pool: str, workers: WorkerProcesses, bad_app: App
) -> None:
    raised = {kind: bad_app.tasks["raises"].delay(kind) for kind in misbehaving.RAISES}
    unpicklable = bad_app.tasks["unpicklable"].delay()
    after = bad_app.tasks["add"].delay(1, 2)
    done = burst(workers, pool)
    assert done.returncode == 0, done.stderr
    assert after.get(timeout=1) == 3
    expected = {
        "exit0": "SystemExit",
        "exit3": "SystemExit",
        "interrupt": "KeyboardInterrupt",
        "generator-exit": "GeneratorExit",
        "base": "NotAnException",
        "unprintable": "Unprintable",
    }
    for kind, result in raised.items():
        with pytest.raises(TaskError) as err:
            result.get(timeout=1)
        assert err.value.exc_type == expected[kind], kind
    with pytest.raises(TaskError, match=r"<str\(\) of the exception raised RuntimeError>"):
        raised["unprintable"].get(timeout=1)
    with pytest.raises(TaskError, match="cannot be serialized: RuntimeError: no pickle"):
        unpicklable.get(timeout=1)
    assert "Traceback" not in done.stderr  # nothing escaped to the worker


def test_a_thread_killed_between_tasks_is_replaced_and_its_delivery_given_back(
    workers: WorkerProcesses, bad_app: App
) -> None:
    """The killed thread dies as it takes its next delivery: that delivery runs again, the
    pool keeps both threads, and a warm shutdown still ends the worker."""
    killer = bad_app.tasks["kill_siblings"].delay()
    worker = workers.start("--pool", "threads", "-c", "2", app=APP)
    assert killer.get(timeout=20) == 1
    naps = [bad_app.tasks["nap"].delay(0.05, f"n{i}") for i in range(6)]
    assert [r.get(timeout=20) for r in naps] == [f"n{i}" for i in range(6)]
    counts = [line.split()[3] for line in workers.lines() if line.startswith("start n")]
    assert sorted(counts) == ["1"] * 5 + ["2"]  # the one it took was given back, counted
    log = workers.output(worker)
    assert "a task thread ended unexpectedly; starting another" in log
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_what_escapes_the_executor_gives_the_delivery_back_and_the_pool_serves_on(
    pool: str, workers: WorkerProcesses, bad_app: App
) -> None:
    """A task_started hook raising SystemExit: in the solo and threads pools it runs in
    the task's thread, so the delivery is given back (and, raising each time, ends as
    poison); in the processes pool it runs in the listener thread, which logs it."""
    workers.env["SOLOIST_HOOK_EXIT"] = "1"
    hooked = bad_app.tasks["hooked"].delay()
    after = [bad_app.tasks["add"].delay(i, i) for i in range(5)]
    done = burst(workers, pool, "-c", "1") if pool != "solo" else burst(workers, pool)
    assert done.returncode == 0, done.stderr
    assert [r.get(timeout=1) for r in after] == [2 * i for i in range(5)]
    if pool == "processes":
        assert hooked.get(timeout=1) == "ran"
        assert "task_started failed" in done.stderr
    else:
        (dead,) = bad_app.broker.dead_letters("default")
        assert "5 times" in dead.reason
        assert "could not run it: SystemExit: from a hook" in done.stderr


@pytest.mark.parametrize("own_handler", [False, True], ids=["default-handler", "own-handler"])
def test_a_timer_left_armed_does_not_reach_the_next_task(
    pool: str, own_handler: bool, workers: WorkerProcesses, bad_app: App
) -> None:
    if own_handler and pool == "threads":
        pytest.skip("only the main thread can set a signal handler")
    armed = bad_app.tasks["arms_alarm"].delay(own_handler)
    later = bad_app.tasks["nap"].delay(0.6, "later")
    done = burst(workers, pool, "-c", "1") if pool != "solo" else burst(workers, pool)
    assert done.returncode == 0, done.stderr
    assert armed.get(timeout=1) == "armed"
    assert later.get(timeout=1) == "later"


def test_a_task_replacing_the_shutdown_handlers_does_not_keep_the_worker_running(
    workers: WorkerProcesses, bad_app: App
) -> None:
    took = bad_app.tasks["takes_signals"].delay()
    worker = workers.start(app=APP)
    assert took.get(timeout=20) == "took"
    wait_until(lambda: "replaced the worker's SIGTERM handler" in workers.output(worker))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert "warm shutdown" in workers.output(worker)
    assert "task's SIGTERM handler" not in workers.lines()


@pytest.mark.parametrize("child_exit", [None, 3], ids=["returns", "sys-exit-3"])
def test_a_forked_child_returning_from_the_task_exits_at_once(
    pool: str, child_exit: int | None, workers: WorkerProcesses, bad_app: App
) -> None:
    forked = bad_app.tasks["forks"].delay(child_exit)
    after = bad_app.tasks["nap"].delay(0, "after")
    done = burst(workers, pool, "-c", "1") if pool != "solo" else burst(workers, pool)
    assert done.returncode == 0, done.stderr
    assert forked.get(timeout=1) == "parent"
    assert after.get(timeout=1) == "after"
    lines = workers.lines()
    assert f"child exited {child_exit or 0}" in lines
    (child,) = [
        line.split()[1] for line in lines if line.startswith("child ") and "exited" not in line
    ]
    (ran,) = [line.split()[2] for line in lines if line.startswith("start after")]
    assert ran != child  # the child went nowhere near the broker
    if child_exit is None:
        assert "returned into the worker; it exits" in done.stderr


def test_the_supervisor_restarts_a_replica_that_exits_0_and_stops_on_its_own_signal(
    workers: WorkerProcesses, bad_app: App
) -> None:
    exiting = bad_app.tasks["os_exit"].delay(0)
    sup = workers.start("--replicas", "1", "--lease", "1", app=APP)
    assert exiting.get(timeout=30) == "survived"  # run again, counted, by a fresh replica
    counts = [line.split()[3] for line in workers.lines() if line.startswith("start os_exit")]
    assert counts == ["1", "2"]
    out = workers.output(sup)
    assert "exited with code 0; restarting in 1.0s" in out
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 0


def test_a_burst_fleet_restarts_a_replica_that_exits_0_before_the_queues_are_empty(
    workers: WorkerProcesses, bad_app: App
) -> None:
    bad_app.tasks["os_exit"].delay(0)
    behind = [bad_app.tasks["add"].delay(i, 1) for i in range(3)]
    done = workers.run("worker", "-A", APP, "--replicas", "1", "--burst", "--prefetch", "1")
    assert done.returncode == 0, done.stderr
    assert [r.get(timeout=1) for r in behind] == [1, 2, 3]
    assert "exited with code 0; restarting" in done.stderr
