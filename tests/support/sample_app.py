"""Tasks run by the worker-process tests: `soloist worker -A tests.support.sample_app:app`.

The broker and result store come from SOLOIST_BROKER_URL / SOLOIST_RESULT_URL, which the
tests point at a SQLite file of their own. Tasks that need to leave a trace append lines
to the file named by SOLOIST_TEST_LEDGER.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from soloist import App, SoftTimeLimitExceeded

app = App()


def ledger(line: str) -> None:
    with open(os.environ["SOLOIST_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


def _square(x: int) -> int:
    return x * x


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="squares")
def squares(n: int) -> list[int]:
    """The seed case: a task that fans out to its own process pool."""
    with ProcessPoolExecutor(max_workers=4) as pool:
        return list(pool.map(_square, range(n)))


@app.task(name="mp_squares")
def mp_squares(n: int) -> list[int]:
    with multiprocessing.Pool(2) as pool:
        return pool.map(_square, range(n))


@app.task(name="threaded_sum")
def threaded_sum(n: int) -> int:
    results = [0] * n

    def work(i: int) -> None:
        results[i] = i * 2

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results)


@app.task(name="sleepy", bind=True)
def sleepy(self: Any, seconds: float, tag: str = "") -> str:
    """Records start and end in the ledger, with its delivery count, around a sleep."""
    ledger(f"start {tag} {os.getpid()} {self.request.delivery_count}")
    time.sleep(seconds)
    ledger(f"end {tag} {os.getpid()}")
    return tag


@app.task(name="killed_first", bind=True)
def killed_first(self: Any, tag: str) -> str:
    """SIGKILLs its worker on its first delivery, as a kill mid-task would; runs after."""
    ledger(f"start {tag} {os.getpid()} {self.request.delivery_count}")
    if self.request.delivery_count == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return tag


@app.task(name="soft_limited", soft_time_limit=0.5, max_retries=0)
def soft_limited(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        ledger("cleaned up")
        raise
    return "finished"


@app.task(name="hard_limited", time_limit=1.0, max_retries=0)
def hard_limited(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@app.task(name="gil_hog", time_limit=1.0, max_retries=0)
def gil_hog() -> bool:
    """A catastrophic regex: one C call that holds the GIL for a very long time."""
    return re.match(r"(a+)+$", "a" * 40 + "b") is not None


@app.task(name="async_add")
async def async_add(a: int, b: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return a + b


@app.task(name="async_loop_id")
async def async_loop_id() -> int:
    import asyncio

    return id(asyncio.get_running_loop())


@app.task(name="async_slow", soft_time_limit=0.3, max_retries=0)
async def async_slow() -> str:
    import asyncio

    await asyncio.sleep(5)
    return "finished"


@app.task(name="retry_once", bind=True, max_retries=3)
def retry_once(self: Any, tag: str) -> str:
    ledger(f"start {tag} {os.getpid()} {self.request.retries}")
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return tag


@app.task(name="fail", max_retries=0)
def fail(tag: str) -> None:
    ledger(f"start {tag} {os.getpid()}")
    raise RuntimeError(f"failing {tag}")


# SOLOIST_CRASH_AT=event[:KIND] ends the worker with os._exit(99) the first time the hook
# event fires (for an outcome of that kind): the crash-point tests' fault injection.
if crash_at := os.environ.get("SOLOIST_CRASH_AT"):
    _event, _, _kind = crash_at.partition(":")

    @app.hooks.on(_event)
    def _crash(event: str, **info: Any) -> None:
        outcome = info.get("outcome")
        if not _kind or (outcome is not None and outcome.kind.name == _kind):
            os._exit(99)


@app.task(name="whoami")
def whoami(seconds: float) -> int:
    ledger(f"start whoami {os.getpid()}")
    time.sleep(seconds)
    return os.getpid()


@app.task(name="fail_first", max_retries=0)
def fail_first(tag: str) -> str:
    """Fails on its first run, succeeds once requeued."""
    with open(os.environ["SOLOIST_TEST_LEDGER"]) as f:
        failed_before = f"failed {tag}" in f.read().splitlines()
    if not failed_before:
        ledger(f"failed {tag}")
        raise RuntimeError(f"first run of {tag}")
    return tag


@app.task(name="terminate_child")
def terminate_child() -> int | None:
    """Forks a child and SIGTERMs it, as multiprocessing.Pool's exit does: it must die."""
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    time.sleep(0.2)
    child.terminate()
    child.join(5)
    return child.exitcode


@app.task(name="collect")
def collect(values: list[Any], tag: str) -> list[Any]:
    """A chord callback that leaves a trace of each run."""
    ledger(f"collect {tag} {values}")
    return values


@app.task(name="retry_later", bind=True)
def retry_later(self: Any) -> None:
    raise self.retry(countdown=600, exc=ConnectionError("try later"))


@app.task(name="tracked", track_started=True)
def tracked(seconds: float, tag: str) -> str:
    ledger(f"start {tag}")
    time.sleep(seconds)
    return tag
