"""RabbitMQ broker speed, each figure beside the floor: a bare pika loop, same run, same server.

    python benchmarks/amqp_bench.py [--url amqp://…] [-n 2000] [--rounds 300]

The floors (benchmarks/floors.py, shared with suite.py) use a quorum queue with the
broker's own arguments and persistent messages: `basic_publish` with a confirm each, or
BATCH per transaction; `basic_consume` (prefetch 1) + `basic_ack`, or prefetch BATCH and
one multiple-ack per BATCH; publish → a pushed consumer. Beside them: `publish` and
`publish_many` (BATCH a call), `fetch(1)` + `ack` and `fetch(BATCH)` + `ack_many`. The
broker's acks also wait for a basic.qos reply, which is what lets them report whether the
server processed them. Read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable

from floors import BATCH, BODY, AMQPFloor, chunks, latencies, rate

from soloist.brokers.amqp import AMQPBroker

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def broker_figures(url: str, queue: str, n: int, rounds: int) -> dict[str, float]:
    producer, consumer = AMQPBroker(url), AMQPBroker(url)

    def publish_all() -> None:
        for _ in range(n):
            producer.publish(queue, BODY)

    def publish_batched() -> None:
        for size in chunks(n):
            producer.publish_many([(queue, BODY, 0, 0)] * size)

    def fetch_ack_all() -> None:
        for _ in range(n):
            (d,) = consumer.fetch([queue], 1, 30, 5)
            consumer.ack(d)

    def fetch_ack_batched() -> None:
        left = n
        while left:
            got = consumer.fetch([queue], min(BATCH, left), 30, 5)
            consumer.ack_many(got)
            left -= len(got)

    def open_consumer() -> Callable[[], Callable[[], object]]:
        mine = AMQPBroker(url)  # in the forked consumer: a connection and I/O thread of its own

        def fetch() -> Callable[[], object]:
            (d,) = mine.fetch([queue], 1, 30, 5)
            return lambda: mine.ack(d)

        return fetch

    try:
        out = {"publish": rate(n, publish_all), "consume": rate(n, fetch_ack_all)}
        out["publish_batched"] = rate(n, publish_batched)
        out["consume_batched"] = rate(n, fetch_ack_batched)
        consumer.close()  # its consumer would take the latency run's messages
        out["p50"], out["p99"] = latencies(
            lambda: producer.publish(queue, BODY), open_consumer, rounds
        )
        return out
    finally:
        producer.delete(queue)
        producer.close()
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("-n", type=int, default=2000, help="messages per throughput run")
    parser.add_argument("--rounds", type=int, default=300, help="latency samples")
    opts = parser.parse_args()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    broker = AMQPBroker(opts.url)
    floor = AMQPFloor(opts.url, f"{queue}-bare", broker.topology.work_args(f"{queue}-bare"))
    broker.close()
    try:
        bare = {
            "publish": floor.publish(opts.n),
            "consume": floor.consume(opts.n),
            "publish_batched": floor.publish_batched(opts.n),
            "consume_batched": floor.consume_batched(opts.n),
        }
        bare["p50"], bare["p99"] = floor.latency(opts.rounds)
    finally:
        floor.close()
    ours = broker_figures(opts.url, queue, opts.n, opts.rounds)
    print(f"{'measure':<40}{'soloist':>10}{'floor':>10}{'ratio':>8}")
    for key, label in [
        ("publish", "publish with confirm (msg/s)"),
        ("consume", "fetch + ack vs consume + ack (msg/s)"),
        ("publish_batched", f"publish_many vs tx of {BATCH} (msg/s)"),
        ("consume_batched", f"fetch({BATCH}) + ack_many (msg/s)"),
        ("p50", "enqueue-to-fetch p50 (ms)"),
        ("p99", "enqueue-to-fetch p99 (ms)"),
    ]:
        print(f"{label:<40}{ours[key]:>10.1f}{bare[key]:>10.1f}{ours[key] / bare[key]:>8.2f}")
    print(f"n={opts.n} messages per rate, {opts.rounds} latency samples; ratio = soloist/floor")


if __name__ == "__main__":
    main()
