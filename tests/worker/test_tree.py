"""A task's process tree ends with the task, in every pool, however the task ends: it
returns, it passes its hard time limit, it is revoked with terminate, the worker is shut
down cold, or the worker is SIGKILLed. The tree holds a grandchild, a child that ignores
SIGTERM, a child in its own session and an orphaned daemon (see tests.support.tree_child)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from soloist import App, TaskError, TaskRevoked
from soloist.testing import drain
from tests.conftest import WorkerProcesses
from tests.support import pool_tasks as tasks
from tests.support.servers import REDIS_URL, require
from tests.worker.test_pools import APP, exit_code, gone, opts, wait_until

#: Every tree: one process per kind, and the parent's grandchild.
TREE_SIZE = len(tasks.TREE_KINDS) + 1
#: The grace between SIGTERM and SIGKILL, the watchdog's snapshot, a loaded machine.
GONE_WITHIN = 20.0


@pytest.fixture
def tree(workers: WorkerProcesses) -> Iterator[list[int]]:
    """The pids of the tree the test's task started, filled in by `start_tree`; any still
    running after the test are killed, so a failing test leaves nothing behind."""
    pids: list[int] = []
    yield pids
    for pid in tasks.tree_pids(str(workers.ledger)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_tree(workers: WorkerProcesses, tree: list[int], pool: str, *args: str) -> int:
    """Start a worker and wait until its `spawn_tree` task's processes all run."""
    proc = workers.start(*opts(pool, *args), app=APP)
    workers.wait_for("tree ready", timeout=60)
    tree.extend(tasks.tree_pids(str(workers.ledger)))
    assert len(tree) == TREE_SIZE
    return proc.pid


def all_gone(pids: list[int]) -> None:
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=GONE_WITHIN)


def test_returning_ends_what_the_task_left_running(
    pool: str, workers: WorkerProcesses, sample_app: App, tree: list[int]
) -> None:
    result = sample_app.tasks["spawn_tree"].delay(0)
    start_tree(workers, tree, pool)
    assert result.get(timeout=60) == "returned"
    all_gone(tree)
    (proc,) = workers.procs
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 0
    assert f"returned leaving {TREE_SIZE} process(es) running" in workers.output(proc)


@pytest.mark.slow
def test_hard_time_limit_ends_the_tree(
    pool: str, workers: WorkerProcesses, sample_app: App, tree: list[int]
) -> None:
    result = sample_app.tasks["spawn_tree"].delay(60)
    start_tree(workers, tree, pool, "-c", "1", "--time-limit", "8")
    with pytest.raises(TaskError) as err:
        result.get(timeout=60)
    assert err.value.exc_type == "TimeLimitExceeded"
    all_gone(tree)
    (proc,) = workers.procs
    if pool == "solo":
        assert exit_code(proc) == 4
    else:
        assert proc.poll() is None


def test_revoke_terminate_ends_the_tree(
    pool: str, workers: WorkerProcesses, sample_app: App, tree: list[int]
) -> None:
    result = sample_app.tasks["spawn_tree"].delay(60)
    start_tree(workers, tree, pool)
    assert result.revoke(terminate=True)
    with pytest.raises(TaskRevoked):
        result.get(timeout=30)
    all_gone(tree)
    (proc,) = workers.procs
    assert proc.poll() is None


def test_cold_shutdown_ends_the_tree(
    pool: str, workers: WorkerProcesses, sample_app: App, tree: list[int]
) -> None:
    sample_app.tasks["spawn_tree"].delay(60)
    start_tree(workers, tree, pool)
    (proc,) = workers.procs
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "warm shutdown" in workers.output(proc))
    proc.send_signal(signal.SIGTERM)
    assert exit_code(proc) == 3
    all_gone(tree)


def test_worker_killed_the_watchdog_ends_the_tree(
    pool: str, workers: WorkerProcesses, sample_app: App, tree: list[int]
) -> None:
    sample_app.tasks["spawn_tree"].delay(60)
    start_tree(workers, tree, pool)
    (proc,) = workers.procs
    proc.kill()
    proc.wait()
    all_gone(tree)


def test_worker_killed_on_redis(workers: WorkerProcesses, sample_app: App, tree: list[int]) -> None:
    require("Redis", "127.0.0.1", 6379)
    url = f"{REDIS_URL}?prefix=tree-{uuid.uuid4().hex[:8]}:"
    workers.use(url)
    sample_app.configure(url, url)
    try:
        sample_app.tasks["spawn_tree"].delay(60)
        start_tree(workers, tree, "solo")
        (proc,) = workers.procs
        proc.kill()
        proc.wait()
        all_gone(tree)
    finally:
        redis = sample_app.broker.redis  # type: ignore[attr-defined]
        redis.client.delete(*redis.client.keys(redis.prefix + "*") or ["-"])


@pytest.mark.parametrize("pool", ["solo", "processes"])
def test_memory_limit_counts_the_tree(pool: str, workers: WorkerProcesses, sample_app: App) -> None:
    """A task whose child grows past --max-memory-per-child gets its process recycled,
    though that process itself stays well under the limit."""
    sample_app.tasks["grow_pool"].delay(150, 2.5)  # past two of the 1 s samples
    sample_app.tasks["sleepy"].delay(0, "after")
    done = workers.run("worker", "-A", APP, "--burst", *opts(pool, "-c", "1"),
                       "--max-memory-per-child", "100")  # fmt: skip
    pids = [line.split()[2] for line in workers.lines() if line.startswith("start ")]
    if pool == "solo":
        assert done.returncode == 5, done.stderr  # recycled after the first task
        assert pids == [pids[0]]
        assert sample_app.broker.depth("default") == 1
    else:
        assert done.returncode == 0, done.stderr
        assert len(pids) == 2 and pids[0] != pids[1]  # its child retired after the task


def test_an_embedded_worker_leaves_its_programs_children_alone(app: App) -> None:
    """`drain` runs a worker inside another program (a test): that program's children are
    not a task's, and are not ended after a task or when the worker stops."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:

        @app.task(name="noop")
        def noop() -> None:
            return None

        noop.delay()
        assert drain(app).done == 1
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
