"""Workflow overhead: a chord against the same tasks sent with `map`, and a chain's per-hop
latency against a round trip per call.

    python benchmarks/workflow_bench.py [--broker sqlite|redis|all] [--members 1000]
                                        [--steps 100] [--repeat 3]

One solo worker process runs everything (`-A workflow_bench:app`); the producer measures
from the first publish until the last result can be read. Figures, medians of --repeat:

* chord: 1,000 no-op members and a callback that counts them, end to end, as a ratio to
  1,000 no-op calls sent with `task.map` and collected (the floor); the difference per
  member is the chord bookkeeping (one `chord_add` per member, the mark, the callback).
* chain: 100 steps, seconds per hop, as a ratio to a round trip per call (send one call,
  wait for its result, send the next: the floor a worker-driven chain should beat).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from soloist import App, chain, chord  # noqa: E402

#: A queue of its own; each run has a fresh SQLite file or Redis key prefix.
QUEUE = "wf-bench"
app = App(default_queue=QUEUE)


@app.task(name="wfb.inc")
def inc(x: int) -> int:
    return x + 1


@app.task(name="wfb.count")
def count(values: list[int]) -> int:
    return len(values)


def measure(broker: str, members: int, steps: int, repeat: int) -> dict[str, float]:
    queue = QUEUE
    env = {
        **os.environ,
        "SOLOIST_BROKER_URL": broker,
        "SOLOIST_RESULT_URL": broker,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
    }
    app.configure(broker, broker)
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "workflow_bench:app", "-Q", queue]
    worker = subprocess.Popen(
        [*cmd, "--loglevel", "warning"], env=env, cwd=HERE, stdout=subprocess.DEVNULL
    )
    try:
        assert inc.delay(1).get(timeout=60) == 2  # the worker is up

        def mapped() -> None:
            inc.map(range(members)).get(timeout=300)

        def chorded() -> None:
            body = count.s().set(queue=queue)
            header = [inc.s(i).set(queue=queue) for i in range(members)]
            assert chord(header, body).delay().get(timeout=300) == members

        def chained() -> None:
            first = inc.si(0).set(queue=queue)
            flow = chain(first, *[inc.s().set(queue=queue) for _ in range(steps - 1)])
            assert flow.delay().get(timeout=300) == steps

        def round_trips() -> None:
            value = 0
            for _ in range(steps):
                value = inc.delay(value).get(timeout=60)

        runs = {"map": mapped, "chord": chorded, "chain": chained, "round_trips": round_trips}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeat):  # interleaved, so drift on a shared machine hits all alike
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        got = {name: statistics.median(values) for name, values in times.items()}
        return got
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if broker.startswith("redis"):
            from soloist.brokers.redis_connection import RedisConnection

            conn = RedisConnection(broker)
            keys = list(conn.client.scan_iter(match=conn.prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                conn.client.delete(*keys[start : start + 1000])
            conn.close()
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="all", help="sqlite, redis or all")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    kinds = ["sqlite", "redis"] if args.broker == "all" else args.broker.split(",")
    print(
        f"{'broker':<8}{'map s':>8}{'chord s':>9}{'ratio':>7}{'per member':>12}"
        f"{'hop ms':>8}{'trip ms':>9}{'ratio':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp:
        for kind in kinds:
            url = (
                f"sqlite:///{tmp}/bench.db"
                if kind == "sqlite"
                else f"redis://127.0.0.1:6379/0?prefix=wfb-{uuid.uuid4().hex[:8]}:"
            )
            r = measure(url, args.members, args.steps, args.repeat)
            extra = (r["chord"] - r["map"]) / args.members * 1e6
            hop, trip = r["chain"] / args.steps * 1e3, r["round_trips"] / args.steps * 1e3
            print(
                f"{kind:<8}{r['map']:>8.3f}{r['chord']:>9.3f}{r['chord'] / r['map']:>7.2f}"
                f"{extra:>9.0f} us{hop:>8.2f}{trip:>9.2f}{hop / trip:>7.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
