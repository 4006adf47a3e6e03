"""The sample app with the few tasks the pool and supervisor tests add:
`soloist worker -A tests.support.pool_tasks:app`."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from soloist import SoftTimeLimitExceeded
from soloist.pools.tree import SNAPSHOT_INTERVAL
from tests.support.sample_app import _square, app, ledger

__all__ = ["app"]

#: Memory a task keeps, so that its process stays big after it returns.
_kept: list[bytes] = []


@app.task(name="stepwise_soft", soft_time_limit=0.5, max_retries=0)
def stepwise_soft(seconds: float) -> str:
    """Sleeps in short steps: the threads pool's soft limit lands between two of them."""
    try:
        for _ in range(int(seconds / 0.05)):
            time.sleep(0.05)
    except SoftTimeLimitExceeded:
        ledger("cleaned up")
        raise
    return "finished"


@app.task(name="hard_sleepy", time_limit=1.0, max_retries=0)
def hard_sleepy(seconds: float) -> str:
    ledger(f"start hard {os.getpid()}")
    time.sleep(seconds)
    ledger("end hard")
    return "finished"


@app.task(name="hog", bind=True)
def hog(self: Any, mb: int, tag: str) -> None:
    ledger(f"start {tag} {os.getpid()} {self.request.delivery_count}")
    _kept.append(b"\1" * (mb * 2**20))


@app.task(name="crash")
def crash() -> None:
    ledger(f"crash {os.getpid()}")
    os._exit(7)


#: What `spawn_tree` starts: one process of each kind (see tests.support.tree_child), and the
#: parent's grandchild.
TREE_KINDS = ("plain", "stubborn", "parent", "session", "daemon")


@app.task(name="spawn_tree", max_retries=0)
def spawn_tree(seconds: float) -> str:
    """Starts a tree of processes, says so once all of them run, then sleeps."""
    for kind in TREE_KINDS:
        subprocess.Popen([sys.executable, "-m", "tests.support.tree_child", kind])
    deadline = time.monotonic() + 30
    while len(tree_pids(os.environ["SOLOIST_TEST_LEDGER"])) < len(TREE_KINDS) + 1:
        assert time.monotonic() < deadline, "the tree did not start"
        time.sleep(0.05)
    # Past two of the watchdog's snapshots, so that a SIGKILL from now on is covered.
    time.sleep(2 * SNAPSHOT_INTERVAL + 0.2)
    ledger(f"tree ready {os.getpid()}")
    time.sleep(seconds)
    return "returned"


def tree_pids(path: str) -> list[int]:
    """The pids the ledger at `path` says `spawn_tree` started."""
    with open(path) as f:
        lines = [line.split() for line in f]
    return [int(p[2]) for p in lines if p[0] == "tree" and p[1] != "ready"]


@app.task(name="cpu_pair", bind=True, cpus=2)
def cpu_pair(self: Any, tag: str, seconds: float) -> int | None:
    """Declares 2 CPUs; records its run in the ledger, with the CPUs it was granted."""
    ledger(f"cpus start {tag} {self.request.cpus}")
    time.sleep(seconds)
    ledger(f"cpus end {tag}")
    return self.request.cpus  # type: ignore[no-any-return]


@app.task(name="cpu_greedy", bind=True, cpus=64)
def cpu_greedy(self: Any) -> int | None:
    """Declares more CPUs than any test's budget."""
    return self.request.cpus  # type: ignore[no-any-return]


@app.task(name="squares_with", max_retries=0)
def squares_with(method: str, kind: str, n: int) -> list[int]:
    """The seed case with a start method: a ProcessPoolExecutor or a multiprocessing.Pool."""
    ctx = multiprocessing.get_context(method)
    if kind == "executor":
        with ProcessPoolExecutor(2, mp_context=ctx) as executor:
            return list(executor.map(_square, range(n)))
    with ctx.Pool(2) as pool:
        return pool.map(_square, range(n))


def _ready_then_sleep(conn: Connection) -> None:
    conn.send("ready")
    time.sleep(30)


@app.task(name="terminated_with", max_retries=0)
def terminated_with(method: str) -> int | None:
    """A child started with `method` and sent SIGTERM once it runs dies of it (it runs no
    worker handler)."""
    ctx = multiprocessing.get_context(method)
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_ready_then_sleep, args=(theirs,))
    child.start()
    assert ours.poll(30) and ours.recv() == "ready"
    child.terminate()
    child.join(10)
    return child.exitcode


def _hold(mb: int, seconds: float) -> None:
    kept = b"\1" * (mb * 2**20)
    time.sleep(seconds)
    del kept


@app.task(name="grow_pool", max_retries=0)
def grow_pool(mb: int, seconds: float) -> None:
    """A task whose own process stays small while a child it starts grows."""
    ledger(f"start grow {os.getpid()}")
    child = multiprocessing.get_context("fork").Process(target=_hold, args=(mb, seconds))
    child.start()
    child.join()
