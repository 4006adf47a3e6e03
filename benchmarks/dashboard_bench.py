"""What an open dashboard costs with many queued messages: the answer time of its API
calls as a page polls them (the snapshot is read again in the background when due), and the
time of one read of the broker (the `soloist status` snapshot: `workers()` and `stats()`),
on a queue holding N messages beside the same on an empty queue in the same run (the
floor), on Redis (a key prefix of its own, deleted after) and on SQLite (a file in a
temporary directory).

    python benchmarks/dashboard_bench.py [-n 1000000] [--brokers redis,sqlite]

Each queue also holds 1,000 delayed messages and 100 dead letters; /api/overview makes one
`workers()` call and one `stats()` per queue, /api/dead-letters one read of 100 letters.
Machines are shared and noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

from starlette.testclient import TestClient

from soloist import App
from soloist.cli.status import snapshot
from soloist.dashboard.server import create_app
from soloist.message import Message

CALLS = ("/api/session", "/api/overview", "/api/dead-letters")
READ = "broker read"
ROUNDS = 30
FILL_BATCH = 5000


def timed(call: Callable[[], object], rounds: int = ROUNDS) -> tuple[float, float]:
    """(median, max) in ms."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def fill(app: App, n: int) -> float:
    """N due messages, 1,000 delayed and 100 dead letters on the default queue; seconds."""
    body = app.encode(Message("add", (1, 2)))
    t0 = time.perf_counter()
    for start in range(0, n, FILL_BATCH):
        app.broker.publish_many([("default", body, 0, 0)] * min(FILL_BATCH, n - start))
    app.broker.publish_many([("default", body, 3600, 0)] * 1000)
    for delivery in app.broker.fetch(["default"], 100, 60, 0):
        app.broker.dead_letter(delivery, "bench")
    return time.perf_counter() - t0


def measure(url: str, n: int) -> dict[str, tuple[float, float]]:
    app = App(url, url)
    client = TestClient(create_app(app, refresh=2.0), base_url="http://127.0.0.1")
    try:
        if n:
            print(f"  filled {n:,} in {fill(app, n):.0f} s; stats: {app.broker.stats('default')}")
        figures = {}
        for path in CALLS:
            assert client.get(path).status_code == 200
            figures[path] = timed(lambda path=path: client.get(path))  # type: ignore[misc]
        figures[READ] = timed(lambda: snapshot(app), 10)
        return figures
    finally:
        client.close()
        if url.startswith("redis"):
            conn = app.broker.redis  # type: ignore[attr-defined]
            keys = list(conn.client.scan_iter(match=conn.prefix + "*", count=10_000))
            for start in range(0, len(keys), 10_000):
                conn.client.delete(*keys[start : start + 10_000])
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--brokers", default="redis,sqlite")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in opts.brokers.split(","):
            urls = {
                "redis": lambda: f"{opts.redis}?prefix=dashbench-{uuid.uuid4().hex[:8]}:",
                "sqlite": lambda: f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db",
            }
            print(f"{kind}:")
            empty = measure(urls[kind](), 0)
            full = measure(urls[kind](), opts.n)
            for path in (*CALLS, READ):
                (e, _), (f, fmax) = empty[path], full[path]
                print(
                    f"  {path:20} empty {e:7.1f} ms  {opts.n:,} queued {f:7.1f} ms "
                    f"(max {fmax:.1f})  ratio {f / e:5.1f}"
                )


if __name__ == "__main__":
    main()
