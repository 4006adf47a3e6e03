"""Periodic and limited tasks run by worker-process tests: `-A tests.support.cluster_app:app`.

Broker and result store come from SOLOIST_BROKER_URL / SOLOIST_RESULT_URL; tasks append
one line per run to the file named by SOLOIST_TEST_LEDGER.
"""

from __future__ import annotations

import os
import time
from typing import Any

from soloist import App

app = App()


def ledger(line: str) -> None:
    with open(os.environ["SOLOIST_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


@app.periodic(every=1, name="tick", bind=True, queue="ticks")
def tick(self: Any) -> None:
    ledger(f"tick {self.request.id} {os.getpid()} {time.time()!r}")


@app.task(name="limited", rate_limit="10/s")
def limited(n: int) -> None:
    ledger(f"limited {n} {os.getpid()} {time.time()!r}")


@app.task(name="exclusive", max_concurrency=1)
def exclusive(n: int, seconds: float) -> None:
    start = time.time()
    ledger(f"exclusive-start {n} {os.getpid()} {start!r}")
    time.sleep(seconds)
    ledger(f"exclusive {n} {os.getpid()} {start!r} {time.time()!r}")
