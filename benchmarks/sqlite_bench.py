"""SQLite broker speed beside the batched floor (benchmarks/floors.py), same run, same disk:
fetch 100 + ack_many on a full queue, alone and with delayed messages published ahead of the
due ones (which a claim must not read past), and an idle claim's cost with those waiting.

    python benchmarks/sqlite_bench.py [-n 50000] [--delayed 20000]

Machines are shared and noisy, so read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from floors import BODY, SQLiteFloor, rate

from soloist.brokers.sqlite import SQLiteBroker

BATCH = 100


def drain(path: Path, n: int, delayed: int) -> tuple[float, float]:
    """(msg/s of fetch 100 + ack_many over n due messages, ms of an idle claim after)."""
    broker = SQLiteBroker(f"sqlite:///{path}")
    try:
        for start in range(0, delayed, 1000):
            broker.publish_many([("q", BODY, 3600, 0)] * min(1000, delayed - start))
        for start in range(0, n, 1000):
            broker.publish_many([("q", BODY, 0, 0)] * min(1000, n - start))

        def run() -> None:
            while got := broker.fetch(["q"], BATCH, 30, 0):
                broker.ack_many(got)

        msgs = rate(n, run)
        t0 = time.perf_counter()
        for _ in range(100):
            broker.fetch(["q"], BATCH, 30, 0)
        return msgs, (time.perf_counter() - t0) * 10
    finally:
        broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50000, help="due messages")
    parser.add_argument("--delayed", type=int, default=20000, help="delayed messages ahead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = SQLiteFloor(str(Path(tmp) / "floor.db"))
        batched = floor.consume_batched(args.n)
        floor.close()
        plain, idle = drain(Path(tmp) / "plain.db", args.n, 0)
        ahead, idle_ahead = drain(Path(tmp) / "ahead.db", args.n, args.delayed)
    print(f"SQLite broker, {args.n} due messages; batched floor {batched:.0f} msg/s")
    print(f"{'fetch 100 + ack_many':36}{'msg/s':>9}{'of floor':>10}{'idle claim ms':>15}")
    for label, msgs, ms in (
        ("no delayed messages", plain, idle),
        (f"{args.delayed} delayed ahead", ahead, idle_ahead),
    ):
        print(f"{label:36}{msgs:9.0f}{msgs / batched:10.2f}{ms:15.3f}")


if __name__ == "__main__":
    main()
