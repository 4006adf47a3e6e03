"""The sample app with the few tasks the pool and supervisor tests add:
`soloist worker -A tests.pools.tasks:app`."""

from __future__ import annotations

import os
import time
from typing import Any

from soloist import SoftTimeLimitExceeded
from tests.sample_app import app, ledger

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
