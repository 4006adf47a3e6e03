"""The task benchmarks/cpus_bench.py runs: `soloist worker -A benchmarks.cpus_app:app`.

`crunch` declares 2 CPUs and opens a process pool of the size it was granted, as a task
should; it returns how long it ran, measured inside it."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from soloist import App

app = App()


def spin(n: int) -> int:
    """Pure CPU: no I/O, no sleeping."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@app.task(name="crunch", bind=True, cpus=2)
def crunch(self: Any, n: int) -> float:
    start = time.perf_counter()
    workers = self.request.cpus or 2
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(spin, [n // workers] * workers))
    return time.perf_counter() - start
