"""Redis publish and wake-up against their floors, in alternate rounds of one run.

    python benchmarks/interleaved_bench.py [--rounds 200] [--chunks 40] [--idle 0.005]

The suite measures Soloist, then its floor; on a shared machine the load moves between
the two. Here they alternate, so a change in load hits both:

* publish: chunks of 200 `task.delay()` and of 200 bare redis-py LPUSHes of the same body
  (benchmarks/floors.py), alternating; the ratio of their totals and the median ratio of
  neighbouring chunks;
* wake-up: one task to an idle `soloist worker`, then one LPUSH to the floor's idle
  BLMOVE consumer (a process of its own), alternating; p50 and p99 of publish-to-start.
  Each waits `--idle` seconds blocked before its message: the longer, the colder the
  caches its wake-up runs on (on a loaded machine other processes fill them meanwhile).
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from floors import BODY
from suite import REDIS_URL, Setup, _drop_prefix, env_for, stamps, wait_for_stamps
from suite_app import make_app

CHUNK = 200


def publish(url: str, prefix: str, chunks: int) -> None:
    app = make_app(url, url, "pub")
    noop = app.tasks["suite.noop"]
    noop.delay()  # connect, load the script
    r = redis.Redis.from_url(REDIS_URL)
    ours = floor = 0.0
    ratios = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        for _ in range(CHUNK):
            r.lpush(prefix + "floor", BODY)
        t1 = time.perf_counter()
        for _ in range(CHUNK):
            noop.delay()
        t2 = time.perf_counter()
        floor, ours = floor + t1 - t0, ours + t2 - t1
        ratios.append((t1 - t0) / (t2 - t1))
    n = CHUNK * chunks
    print(f"publish: task.delay {n / ours:.0f}/s, LPUSH {n / floor:.0f}/s, ratio {floor / ours:.2f}"
          f" (median of chunks {statistics.median(ratios):.2f})")  # fmt: skip
    app.close()
    r.close()


def _blmove_consumer(src: str, busy: str, out: object) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    out.send(0.0)  # type: ignore[attr-defined]
    while True:
        body = r.blmove(src, busy, 5, "RIGHT", "LEFT")
        if body is not None:
            out.send(time.time())  # type: ignore[attr-defined]
            r.lrem(busy, 1, body)


def wakeups(url: str, prefix: str, rounds: int, idle: float, tmp: Path) -> None:
    queue, stamp_file = "wake", tmp / "stamps"
    app = make_app(url, url, queue)
    stamp = app.tasks["suite.stamp"]
    setup = Setup("redis", url, url, None, "", 0, 0, 0, lambda: None)  # type: ignore[arg-type]
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "suite_app:app", "-Q", queue]
    worker = subprocess.Popen([*cmd, "-l", "error"], env=env_for(setup, queue, stamp_file))
    fork = multiprocessing.get_context("fork")
    here, there = fork.Pipe()
    src, busy = prefix + "floor:src", prefix + "floor:busy"
    consumer = fork.Process(target=_blmove_consumer, args=(src, busy, there), daemon=True)
    consumer.start()
    r = redis.Redis.from_url(REDIS_URL)
    floor: list[float] = []
    try:
        here.recv()
        stamp.delay(time.time())
        wait_for_stamps(stamp_file, 1)
        for i in range(rounds):
            time.sleep(idle)  # both are blocked again by now
            stamp.delay(time.time())
            wait_for_stamps(stamp_file, i + 2)
            time.sleep(idle)
            t0 = time.time()
            r.lpush(src, BODY)
            floor.append(here.recv() - t0)
        ours = stamps(stamp_file)[1:]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        consumer.kill()
        app.close()
        r.close()
    (o50, o99), (f50, f99) = _percentiles(ours), _percentiles(floor)
    print(f"wake-up: soloist p50 {o50:.2f} p99 {o99:.2f} ms, BLMOVE floor p50 {f50:.2f}"
          f" p99 {f99:.2f} ms; ratio p50 {o50 / f50:.2f}, p99 {o99 / f99:.2f}")  # fmt: skip


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[max(int(len(ms) * 0.99) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--idle", type=float, default=0.005, help="seconds before each wake-up")
    args = parser.parse_args()
    prefix = f"soloist-interleaved-{uuid.uuid4().hex[:8]}:"
    url = f"{REDIS_URL}?prefix={prefix}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            publish(url, prefix, args.chunks)
            wakeups(url, prefix, args.rounds, args.idle, Path(tmp))
    finally:
        _drop_prefix(prefix)


if __name__ == "__main__":
    main()
