"""What settling each task at once costs against settling a batch: no-op tasks/s.

    python benchmarks/settle_bench.py [--brokers memory,sqlite,redis,amqp] [--tasks 20000]
                                      [--rounds 5] [--batches 1,100]

One solo worker in this process drains a pre-filled queue in burst mode (as suite.py's
execution rate), once per `--settle-batch` value, interleaved round by round so a noisy
machine weighs on each alike; prints the median tasks/s of each, its ratio to the largest
batch, and what settling in smaller batches adds to each task (µs): a task that runs T µs
is slowed by about that over T plus the batched cost, which is how a ratio measured on
no-op tasks carries over to real ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from floors import rate
from suite import AMQP_URL, REDIS_URL, _delete_amqp_queues, _drop_prefix, new_queue
from suite_app import make_app

from soloist.worker.loop import Worker


def drain(broker: str, results: str, tasks: int, settle_batch: int, with_results: bool) -> float:
    queue = new_queue("settle")
    app = make_app(broker, results, queue)
    app.tasks["suite.noop_result" if with_results else "suite.noop"].starmap([()] * tasks)
    app.results.get("suite-warm-up")
    worker = Worker(app, [queue], burst=True, settle_batch=settle_batch)
    try:
        return rate(tasks, worker.run)
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
    print(
        f"{'broker':<8}{'results':<9}"
        + "".join(f"{f'batch {b}':>12}" for b in batches)
        + "".join(f"{f'{b}/{max(batches)}':>10}" for b in batches if b != max(batches))
        + "".join(f"{f'+us {b}':>10}" for b in batches if b != max(batches))
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
                got: dict[int, list[float]] = {b: [] for b in batches}
                for _ in range(args.rounds):
                    for b in batches:
                        got[b].append(drain(url, results, args.tasks, b, with_results))
                med = {b: statistics.median(v) for b, v in got.items()}
                top = med[max(batches)]
                print(
                    f"{name:<8}{'on' if with_results else 'off':<9}"
                    + "".join(f"{med[b]:>12.0f}" for b in batches)
                    + "".join(f"{med[b] / top:>10.2f}" for b in batches if b != max(batches))
                    + "".join(
                        f"{(1 / med[b] - 1 / top) * 1e6:>10.1f}"
                        for b in batches
                        if b != max(batches)
                    )
                )
            if name == "redis":
                _drop_prefix("settle-bench:")
            if name == "amqp":
                _delete_amqp_queues()


if __name__ == "__main__":
    main()
