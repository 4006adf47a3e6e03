"""Redis broker speed, each figure beside the floor: a bare redis-py loop, same run, same server.

    python benchmarks/redis_bench.py [--url redis://127.0.0.1:6379/15] [-n 5000]

The floors (benchmarks/floors.py, shared with suite.py) are the fewest raw Redis operations
a reliable list-based queue needs: LPUSH to publish; LMOVE to a processing list and LREM to
ack, one by one or pipelined 100 at a time; BLMOVE for an idle consumer's wake-up. The
batched row (fetch 100, then one ack_many) is the broker's share of a busy worker's time per
message, with no worker around it.
Machines are shared and noisy, so read the ratios, not the absolute figures. All keys go
under a fresh prefix that is deleted at the end.
"""

from __future__ import annotations

import argparse
import logging
import uuid
from collections.abc import Callable

import redis
from floors import RedisFloor, latencies, rate

from soloist import App
from soloist.brokers.redis import RedisBroker
from soloist.worker.loop import Worker

BODY = b'{"task": "noop", "args": [], "kwargs": {}}' + b" " * 100
BATCH = 100


def publish_rates(broker: RedisBroker, floor: RedisFloor, n: int) -> tuple[float, float]:
    queue = "bench-publish"

    def soloist() -> None:
        for _ in range(n):
            broker.publish(queue, BODY)

    return rate(n, soloist), floor.publish(n)


def consume_rates(broker: RedisBroker, floor: RedisFloor, n: int) -> tuple[float, float]:
    queue = "bench-consume"
    broker.publish_many([(queue, BODY, 0, 0)] * n)

    def soloist() -> None:
        while got := broker.fetch([queue], BATCH, 30, 0):
            for delivery in got:
                broker.ack(delivery)

    return rate(n, soloist), floor.consume(n)


def batched_consume_rates(broker: RedisBroker, floor: RedisFloor, n: int) -> tuple[float, float]:
    queue = "bench-batched"
    broker.publish_many([(queue, BODY, 0, 0)] * n)

    def soloist() -> None:
        while got := broker.fetch([queue], BATCH, 30, 0):
            broker.ack_many(got)

    return rate(n, soloist), floor.consume_batched(n)


def worker_rate(url: str, n: int) -> float:
    """No-op tasks/s through one solo worker in burst mode, prefetching a batch."""
    app = App(url, "memory://")

    @app.task(queue="bench-worker", ignore_result=True)
    def noop() -> None:
        pass

    for _ in range(n):
        noop.delay()
    worker = Worker(app, ["bench-worker"], prefetch=BATCH, burst=True, keeper=False)
    logging.getLogger("soloist").setLevel(logging.WARNING)
    result = rate(n, worker.run)
    app.close()
    return result


def latency_figures(
    broker: RedisBroker, floor: RedisFloor, rounds: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    queue = "bench-latency"

    def open_consumer() -> Callable[[], Callable[[], object]]:
        consumer = RedisBroker(broker.url)

        def fetch() -> Callable[[], object]:
            (delivery,) = consumer.fetch([queue], 1, 30, 5)
            return lambda: consumer.ack(delivery)

        return fetch

    ours = latencies(lambda: broker.publish(queue, BODY), open_consumer, rounds)
    return ours, floor.latency(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("-n", type=int, default=5000, help="messages per throughput run")
    parser.add_argument("--rounds", type=int, default=500, help="latency samples")
    args = parser.parse_args()

    prefix = f"soloist-bench-{uuid.uuid4().hex[:8]}:"
    url = f"{args.url}{'&' if '?' in args.url else '?'}prefix={prefix}"
    broker = RedisBroker(url)
    raw = redis.Redis.from_url(args.url)
    floor = RedisFloor(args.url, prefix)
    try:
        pub = publish_rates(broker, floor, args.n)
        con = consume_rates(broker, floor, args.n)
        bat = batched_consume_rates(broker, floor, args.n)
        solo = worker_rate(url, args.n)
        (p50, p99), (f50, f99) = latency_figures(broker, floor, args.rounds)
    finally:
        floor.close()
        keys = list(raw.scan_iter(match=prefix + "*", count=1000))
        if keys:
            raw.delete(*keys)
        broker.close()
    rows = [
        ("publish (msg/s)", pub[0], pub[1], "LPUSH", pub[0] / pub[1]),
        (f"fetch {BATCH} + ack each (msg/s)", con[0], con[1], "LMOVE + LREM", con[0] / con[1]),
        (f"fetch {BATCH} + ack_many (msg/s)", bat[0], bat[1], "pipelined", bat[0] / bat[1]),
        ("  same, µs per message", 1e6 / bat[0], 1e6 / bat[1], "pipelined", bat[1] / bat[0]),
        ("solo worker, no-op tasks (tasks/s)", solo, con[1], "LMOVE + LREM", solo / con[1]),
        ("  same against the pipelined floor", solo, bat[1], "pipelined", solo / bat[1]),
        ("enqueue-to-fetch p50 (ms)", p50, f50, "LPUSH → BLMOVE", p50 / f50),
        ("enqueue-to-fetch p99 (ms)", p99, f99, "LPUSH → BLMOVE", p99 / f99),
    ]
    print(f"Redis broker vs bare redis-py, n={args.n}, {args.rounds} latency rounds")
    print(f"{'measure':<36}{'soloist':>10}{'floor':>10}  {'floor ops':<16}{'ratio':>7}")
    for name, ours, bare, ops, ratio in rows:
        print(f"{name:<36}{ours:>10.2f}{bare:>10.2f}  {ops:<16}{ratio:>6.2f}x")


if __name__ == "__main__":
    main()
