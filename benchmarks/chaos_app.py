"""The task the chaos run executes: it writes its life to a ledger around a short sleep.

Broker, queue and ledger come from the environment, set by benchmarks/chaos.py.
"""

from __future__ import annotations

import os
import time
from typing import Any

from soloist import App

app = App(default_queue=os.environ.get("CHAOS_QUEUE", "default"))
_LEDGER = os.environ.get("CHAOS_LEDGER", "chaos-ledger.txt")


def _append(line: str) -> None:
    # One write of one short line on an O_APPEND descriptor: lines never interleave.
    fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _live(req: Any, ms: int) -> None:
    _append(f"start {req.id} {req.delivery_count} {os.getpid()} {time.time():.6f}")
    time.sleep(ms / 1000)
    _append(f"end {req.id} {os.getpid()} {time.time():.6f}")


@app.task(name="chaos.work", bind=True, ignore_result=True, max_retries=0)
def work(self: Any, ms: int) -> None:
    _live(self.request, ms)


@app.task(name="chaos.flaky", bind=True, max_retries=0)
def flaky(self: Any, ms: int) -> str:
    """Fails its first run (dead-lettered, for the operators to requeue), then runs as
    `work` does. The first run writes `failed`, not `start`: only reruns are counted."""
    req = self.request
    try:
        with open(_LEDGER) as f:
            failed_before = any(line.startswith(f"failed {req.id} ") for line in f)
    except FileNotFoundError:
        failed_before = False
    if not failed_before:
        _append(f"failed {req.id} {os.getpid()} {time.time():.6f}")
        raise RuntimeError("the first run of a flaky task")
    _live(req, ms)
    return str(req.id)
