"""AMQPBroker beside bare pika loops doing the same AMQP operations, in the same run.

    python benchmarks/amqp_bench.py [--n 2000] [--samples 300] [--url amqp://…]

Both sides use a quorum queue with the same arguments, persistent messages and publisher
confirms. Rows:

* publish: `broker.publish` vs `basic_publish` on a confirm-mode channel (one at a time).
* fetch+ack: `broker.fetch(max_count=1)` + `broker.ack` vs `basic_get` + `basic_ack` (the
  broker's busy path). The broker also waits for a basic.qos reply after each ack, which
  is what lets `ack` report whether the server processed it. A bare `basic_consume` loop
  (prefetch 1, acks not waited for) is shown as a further floor.
* latency: publish to fetch with the consumer idle in `fetch`, vs a bare consumer thread
  in `basic_consume`; one message in flight at a time.

The machine is shared and noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import struct
import threading
import time
import uuid
from collections.abc import Callable

import pika

from soloist.brokers.amqp import AMQPBroker

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def rate(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def percentile(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))] * 1000


def bench_broker(url: str, queue: str, n: int, samples: int) -> dict[str, float]:
    producer, consumer = AMQPBroker(url), AMQPBroker(url)
    try:
        body = b"x" * 200
        out = {"publish": rate(n, lambda: producer.publish(queue, body) and None)}

        def fetch_ack() -> None:
            (d,) = consumer.fetch([queue], 1, 30, 5)
            consumer.ack(d)

        out["fetch+ack"] = rate(n, fetch_ack)
        latencies: list[float] = []

        def consume() -> None:
            while len(latencies) < samples:
                for d in consumer.fetch([queue], 1, 30, 1.0):
                    latencies.append(time.perf_counter() - struct.unpack("d", d.body)[0])
                    consumer.ack(d)

        thread = threading.Thread(target=consume)
        thread.start()
        for i in range(samples):
            producer.publish(queue, struct.pack("d", time.perf_counter()))
            while len(latencies) <= i:
                time.sleep(0.0005)
        thread.join()
        out["p50"], out["p99"] = percentile(latencies, 0.5), percentile(latencies, 0.99)
        return out
    finally:
        producer.delete(queue)
        producer.close()
        consumer.close()


def bench_bare(
    url: str, queue: str, args: dict[str, object], n: int, samples: int
) -> dict[str, float]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments=args)
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, message_id="m", headers={"a": 0})
    body = b"x" * 200
    out = {"publish": rate(n, lambda: ch.basic_publish("", queue, body, props, mandatory=True))}
    sub = conn.channel()

    def get_ack() -> None:
        method, _, _ = sub.basic_get(queue)
        sub.basic_ack(method.delivery_tag)

    out["fetch+ack"] = rate(n, get_ack)
    for _ in range(n):
        ch.basic_publish("", queue, body, props, mandatory=True)
    sub.basic_qos(prefetch_count=1)
    t0 = time.perf_counter()
    for got, (method, _, _) in enumerate(sub.consume(queue), 1):
        sub.basic_ack(method.delivery_tag)
        if got == n:
            break
    out["consume+ack"] = n / (time.perf_counter() - t0)
    sub.cancel()

    # Latency: a consumer thread with its own connection, as the broker's I/O thread has.
    latencies: list[float] = []
    ready = threading.Event()

    def consume() -> None:
        c = pika.BlockingConnection(pika.URLParameters(url))
        cch = c.channel()
        cch.basic_qos(prefetch_count=1)

        def on_message(chan: object, method: object, _p: object, data: bytes) -> None:
            latencies.append(time.perf_counter() - struct.unpack("d", data)[0])
            cch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
            if len(latencies) >= samples:
                cch.stop_consuming()

        cch.basic_consume(queue, on_message)
        ready.set()
        cch.start_consuming()
        c.close()

    thread = threading.Thread(target=consume)
    thread.start()
    ready.wait()
    for i in range(samples):
        ch.basic_publish("", queue, struct.pack("d", time.perf_counter()), props)
        while len(latencies) <= i:
            time.sleep(0.0005)
    thread.join()
    out["p50"], out["p99"] = percentile(latencies, 0.5), percentile(latencies, 0.99)
    ch.queue_delete(queue)
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=300)
    opts = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    broker = AMQPBroker(opts.url)
    args = broker._work_args(f"bench-{tag}-bare")  # the same queue arguments as the broker's
    broker.close()
    bare = bench_bare(opts.url, f"bench-{tag}-bare", args, opts.n, opts.samples)
    ours = bench_broker(opts.url, f"bench-{tag}", opts.n, opts.samples)
    print(f"{'operation':<38}{'AMQPBroker':>12}{'bare pika':>12}{'ratio':>8}")
    for key, label, unit in [
        ("publish", "publish with confirm", "msg/s"),
        ("fetch+ack", "fetch+ack (vs basic_get+ack)", "msg/s"),
        ("p50", "enqueue->fetch latency p50", "ms"),
        ("p99", "enqueue->fetch latency p99", "ms"),
    ]:
        ratio = ours[key] / bare[key]
        print(f"{label + ' (' + unit + ')':<38}{ours[key]:>12.1f}{bare[key]:>12.1f}{ratio:>8.2f}")
    print(
        f"{'bare basic_consume+ack (msg/s)':<38}{'':>12}{bare['consume+ack']:>12.1f}"
        f"{ours['fetch+ack'] / bare['consume+ack']:>8.2f}"
    )
    print(f"n={opts.n} messages per rate, {opts.samples} latency samples; ratio = broker/bare")


if __name__ == "__main__":
    main()
