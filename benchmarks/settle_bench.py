"""What settling each task at once costs against settling a batch: no-op tasks/s.

    python benchmarks/settle_bench.py [--brokers memory,sqlite,redis,amqp] [--tasks 20000]
                                      [--rounds 5] [--batches 1,100]

One solo worker in this process drains a pre-filled queue in burst mode (as suite.py's
execution rate), once per `--settle-batch` value, interleaved round by round so a noisy
machine weighs on each alike. Prints the median tasks/s of each, its ratio to the largest
batch, and what settling in smaller batches adds to each task: in wall time, and in this
process's CPU time (the worker, its I/O thread and SQLite; not the Redis or RabbitMQ
server), which a loaded machine disturbs far less. A task that runs T µs is slowed by
about the added wall time over T plus the batched cost: that is how a ratio measured on
no-op tasks carries over to real ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from suite import AMQP_URL, REDIS_URL, _delete_amqp_queues, _drop_prefix, new_queue
from suite_app import make_app

from soloist.worker.loop import Worker


def drain(
    broker: str, results: str, tasks: int, settle_batch: int, with_results: bool
) -> tuple[float, float]:
    """Tasks/s, and this process's CPU µs per task."""
    queue = new_queue("settle")
    app = make_app(broker, results, queue)
    app.tasks["suite.noop_result" if with_results else "suite.noop"].starmap([()] * tasks)
    app.results.get("suite-warm-up")
    worker = Worker(app, [queue], burst=True, settle_batch=settle_batch)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        worker.run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return tasks / wall, cpu / tasks * 1e6
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="memory,sqlite,redis")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,100")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    top = max(batches)
    small = [b for b in batches if b != top]
    print(
        f"{'broker':<8}{'results':<9}"
        + "".join(f"{f'batch {b}/s':>13}" for b in batches)
        + "".join(f"{f'{b}/{top}':>8}{'range':>11}{f'+us {b}':>9}{'+cpu us':>9}" for b in small)
    )
    with tempfile.TemporaryDirectory(prefix="settle-bench-") as tmp:
        for name in args.brokers.split(","):
            url = {
                "memory": "memory://",
                "sqlite": f"sqlite:///{Path(tmp) / 'settle.db'}",
                "redis": f"{REDIS_URL}?prefix=settle-bench:",
                "amqp": AMQP_URL,
            }[name]
            # RabbitMQ keeps no results: SQLite does, as in suite.py.
            results = f"sqlite:///{Path(tmp) / 'results.db'}" if name == "amqp" else url
            for with_results in (False, True):
                rates: dict[int, list[float]] = {b: [] for b in batches}
                cpus: dict[int, list[float]] = {b: [] for b in batches}
                for _ in range(args.rounds):
                    for b in batches:
                        rate, cpu = drain(url, results, args.tasks, b, with_results)
                        rates[b].append(rate)
                        cpus[b].append(cpu)
                med = {b: statistics.median(v) for b, v in rates.items()}
                cpu = {b: statistics.median(v) for b, v in cpus.items()}
                # Each round's ratio: the two drains ran side by side, under the same load.
                ratios = {
                    b: [x / y for x, y in zip(rates[b], rates[top], strict=True)] for b in small
                }
                print(
                    f"{name:<8}{'on' if with_results else 'off':<9}"
                    + "".join(f"{med[b]:>13.0f}" for b in batches)
                    + "".join(
                        f"{statistics.median(ratios[b]):>8.2f}"
                        f"{f'{min(ratios[b]):.2f}-{max(ratios[b]):.2f}':>11}"
                        f"{(1 / med[b] - 1 / med[top]) * 1e6:>9.1f}"
                        f"{cpu[b] - cpu[top]:>9.1f}"
                        for b in small
                    )
                )
            if name == "redis":
                _drop_prefix("settle-bench:")
            if name == "amqp":
                _delete_amqp_queues()


if __name__ == "__main__":
    main()
