"""RabbitMQ broker speed, each figure beside the floor: a bare pika loop, same run, same server.

    python benchmarks/amqp_bench.py [--url amqp://…] [-n 2000] [--rounds 300]

The floors (benchmarks/floors.py, shared with suite.py) use a quorum queue with the
broker's own arguments, persistent messages and publisher confirms: `basic_publish` with
a confirm each; `basic_consume` (prefetch 1) + `basic_ack`; publish → a pushed consumer.
The broker's fetch+ack also waits for a basic.qos reply after each ack, which is what lets
`ack` report whether the server processed it. Read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable

from floors import AMQPFloor, latencies, rate

from soloist.brokers.amqp import AMQPBroker

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = b"x" * 200


def broker_figures(url: str, queue: str, n: int, rounds: int) -> dict[str, float]:
    producer, consumer = AMQPBroker(url), AMQPBroker(url)

    def publish_all() -> None:
        for _ in range(n):
            producer.publish(queue, BODY)

    def fetch_ack_all() -> None:
        for _ in range(n):
            (d,) = consumer.fetch([queue], 1, 30, 5)
            consumer.ack(d)

    def fetch() -> Callable[[], object]:
        (d,) = consumer.fetch([queue], 1, 30, 5)
        return lambda: consumer.ack(d)

    try:
        out = {"publish": rate(n, publish_all), "consume": rate(n, fetch_ack_all)}
        out["p50"], out["p99"] = latencies(lambda: producer.publish(queue, BODY), fetch, rounds)
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
    floor = AMQPFloor(opts.url, f"{queue}-bare", broker._work_args(f"{queue}-bare"))
    broker.close()
    try:
        bare = {"publish": floor.publish(opts.n), "consume": floor.consume(opts.n)}
        bare["p50"], bare["p99"] = floor.latency(opts.rounds)
    finally:
        floor.close()
    ours = broker_figures(opts.url, queue, opts.n, opts.rounds)
    print(f"{'measure':<40}{'soloist':>10}{'floor':>10}{'ratio':>8}")
    for key, label in [
        ("publish", "publish with confirm (msg/s)"),
        ("consume", "fetch + ack vs consume + ack (msg/s)"),
        ("p50", "enqueue-to-fetch p50 (ms)"),
        ("p99", "enqueue-to-fetch p99 (ms)"),
    ]:
        print(f"{label:<40}{ours[key]:>10.1f}{bare[key]:>10.1f}{ours[key] / bare[key]:>8.2f}")
    print(f"n={opts.n} messages per rate, {opts.rounds} latency samples; ratio = soloist/floor")


if __name__ == "__main__":
    main()
