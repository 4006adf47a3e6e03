"""What cluster-wide limits cost a worker: no-op tasks run by an in-process worker, with no
limit (the floor, same run), and with each limit set high enough never to hold a task
back, so the figure is the price of the check itself. Counts the result store's
coordination calls (each one round trip) per task, and the tasks/s against the floor.

    python benchmarks/limits_bench.py [-n 3000] [--backend sqlite|redis] [--rounds 3]

Redis runs on the shared server (SOLOIST_TEST_REDIS_URL or 127.0.0.1:6379) under a key
prefix of its own, deleted after. Machines are shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from soloist import App
from soloist.brokers.redis import RedisBroker
from soloist.results.base import ResultStore
from soloist.testing import drain

#: The coordination methods a limit calls (ResultStore), each one round trip.
CALLS = ("claim", "swap", "peek", "take_token", "acquire_slot", "release_slot", "renew_slots")

CASES: dict[str, dict[str, Any]] = {
    "no limit (floor)": {},
    "rate_limit=1000000/s": {"rate_limit": "1000000/s"},
    "max_concurrency=1000": {"max_concurrency": 1000},
    "unique_for=60 (+ its send)": {"unique_for": 60, "unique_key": str},
}


def counting(store: ResultStore, counts: Counter[str], names: tuple[str, ...] = CALLS) -> None:
    """Count each call of `names` on `store` (instance attributes shadow the methods)."""
    for name in names:
        method: Callable[..., Any] = getattr(store, name)

        def wrapped(*args: Any, _m: Callable[..., Any] = method, _n: str = name) -> Any:
            counts[_n] += 1
            return _m(*args)

        setattr(store, name, wrapped)


def run(url: str, n: int, options: dict[str, Any]) -> tuple[float, float]:
    """(tasks/s of the worker, coordination calls per task, sends included)."""
    app = App(url, url)
    counts: Counter[str] = Counter()
    try:
        task = app.task(name="noop", ignore_result=True, **options)(lambda i: None)
        counting(app.results, counts)
        for start in range(0, n, 500):
            task.starmap((i,) for i in range(start, min(start + 500, n)))
        t0 = time.perf_counter()
        stats = drain(app, prefetch=100, keeper=False)
        elapsed = time.perf_counter() - t0
        assert stats.done == n, stats
        return n / elapsed, sum(counts.values()) / n
    finally:
        if isinstance(app.broker, RedisBroker):  # the bench's own keys only
            conn = app.broker.redis
            for key in list(conn.client.scan_iter(match=conn.prefix + "*", count=1000)):
                conn.client.delete(key)
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="tasks per case")
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case; best kept")
    args = parser.parse_args()
    print(f"{args.n} no-op tasks per case, broker and result store on {args.backend}")
    print(f"{'limit':30}{'tasks/s':>10}{'of floor':>10}{'store calls/task':>18}")
    with tempfile.TemporaryDirectory() as tmp:

        def url() -> str:
            if args.backend == "sqlite":
                return f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
            base = os.environ.get("SOLOIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
            return f"{base}?prefix=limits-bench-{uuid.uuid4().hex[:8]}:"

        run(url(), min(args.n, 500), {})  # warm up: imports, connections, scripts
        # Rounds over every case, the best of each kept: a shared machine's noise comes in
        # bursts and only ever slows a run down.
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for label, options in CASES.items():
                best[label] = max(best.get(label, (0.0, 0.0)), run(url(), args.n, options))
        floor = best["no limit (floor)"][0]
        for label, (rate, calls) in best.items():
            print(f"{label:30}{rate:>10.0f}{rate / floor:>10.2f}{calls:>18.2f}")


if __name__ == "__main__":
    main()
