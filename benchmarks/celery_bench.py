"""The same Celery app's no-op tasks through `celery worker -P solo` and `soloist worker`,
on the same Redis, in the same run.

    python benchmarks/celery_bench.py [--tasks 5000] [--latency 200] [--no-results]

For each worker: tasks/s over a backlog of --tasks no-op tasks sent by Celery's producer
(results stored in the app's Redis backend; none with --no-results), timed from the
first message taken to the last one settled; enqueue-to-start latency p50 and p99 of
--latency tasks sent one at a time to the idle worker (each returns when it started,
read with AsyncResult.get()); and the worker process's peak RSS. Each worker gets key
prefixes of its own. Machines are shared and noisy: read the ratio of the two, measured
side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
WORKERS = {
    "celery worker -P solo": [
        sys.executable, "-m", "celery", "-A", "celery_bench_app:app", "worker", "-P", "solo",
        "--without-mingle", "--without-gossip", "-l", "warning",
    ],
    "soloist worker": [
        sys.executable, "-m", "soloist", "worker", "-A", "celery_bench_app:app", "-l", "warning",
    ],
    # Settles held for a batch: faster, but a SIGKILL reruns up to 99 finished tasks.
    "soloist --settle-batch 100": [
        sys.executable, "-m", "soloist", "worker", "-A", "celery_bench_app:app", "-l", "warning",
        "--settle-batch", "100",
    ],
}  # fmt: skip


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(command: list[str], task: str, tasks: int, samples: int, url: str) -> dict[str, float]:
    prefix = f"celery-bench-{uuid.uuid4().hex[:8]}:"
    os.environ["CELERY_BENCH_PREFIX"] = prefix
    os.environ["CELERY_BENCH_REDIS"] = url
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}
    # The producer: a Celery app of its own on this run's prefix (the tasks are sent by name).
    options = {"global_keyprefix": prefix}
    producer_app = Celery("producer", broker=url, backend=url)
    producer_app.conf.update(
        broker_transport_options=options, result_backend_transport_options=options
    )
    client = redis.Redis.from_url(url)
    queue = f"{prefix}celery"
    with producer_app.producer_or_acquire() as producer:
        for _ in range(tasks):
            producer_app.send_task(task, producer=producer)
    proc = subprocess.Popen(command, env=env, cwd=ROOT / "benchmarks")
    try:
        while client.llen(queue) == tasks:
            time.sleep(0.001)
        first = time.perf_counter()
        while client.llen(queue) or client.hlen(f"{prefix}unacked"):
            time.sleep(0.001)
        rate = tasks / (time.perf_counter() - first)
        latencies = []
        for _ in range(samples):
            sent = time.time()
            started = producer_app.send_task("celery_bench_app.started")
            latencies.append(started.get(timeout=30) - sent)
            time.sleep(0.01)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        producer_app.close()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    latencies.sort()
    return {
        "rate": rate,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rss": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--no-results", action="store_true", help="no-op tasks with ignore_result=True"
    )
    args = parser.parse_args()
    task = "celery_bench_app.noop_quiet" if args.no_results else "celery_bench_app.noop"
    rows = {name: measure(cmd, task, args.tasks, args.latency, args.redis)
            for name, cmd in WORKERS.items()}  # fmt: skip
    print(f"{'worker':27} {'tasks/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8}")
    for name, row in rows.items():
        print(f"{name:27} {row['rate']:9.0f} {row['p50']:8.2f} {row['p99']:8.2f} {row['rss']:8.1f}")
    celery_row, soloist_row, batched_row = rows.values()
    print(
        f"soloist / celery: {soloist_row['rate'] / celery_row['rate']:.1f}x tasks/s"
        f" ({batched_row['rate'] / celery_row['rate']:.1f}x with --settle-batch 100)"
    )


if __name__ == "__main__":
    main()
