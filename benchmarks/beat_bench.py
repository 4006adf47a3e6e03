"""What `--beat` costs: result-store calls (each one round trip) per tick, for N schedulers
sharing one store, and between ticks; and how long one scheduler's pass takes.

    python benchmarks/beat_bench.py [--schedulers 3] [--ticks 200] [--backend sqlite|redis]

The schedulers run in this process on a clock the bench moves (Beat.run_once(now)), five
passes per tick as a worker's thread makes them (BEAT_TICK 0.2 s), so the figures count
calls, not time. Redis runs on the shared server under a key prefix of its own, deleted
after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import Counter

from limits_bench import CALLS, counting

from soloist import App
from soloist.brokers.redis import RedisBroker
from soloist.worker.beat import BEAT_TICK, Beat

START = 2_000_000_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedulers", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=200, help="ticks of a 1 s schedule")
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            url = f"sqlite:///{tmp}/beat.db"
        else:
            base = os.environ.get("SOLOIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
            url = f"{base}?prefix=beat-bench-{uuid.uuid4().hex[:8]}:"
        app = App(url, url)
        try:
            app.periodic(every=1, name="tick", ignore_result=True)(lambda: None)
            counts: Counter[str] = Counter()
            beats = [Beat(app, f"w{i}") for i in range(args.schedulers)]
            for beat in beats:
                beat.run_once(START)
            # The claims, plus what sending a tick costs: reserving its id, the last tick.
            counting(app.results, counts, (*CALLS, "set_value", "put_new"))
            passes, sent, idle_calls, elapsed = 0, 0, 0, 0.0
            steps = round(1 / BEAT_TICK)
            for n in range(args.ticks * steps):
                now = START + (n + 1) * BEAT_TICK
                for beat in beats:
                    before = sum(counts.values())
                    t0 = time.perf_counter()
                    sent += len(beat.run_once(now))
                    elapsed += time.perf_counter() - t0
                    passes += 1
                    if (n + 1) % steps:  # no tick fell due since the last pass
                        idle_calls += sum(counts.values()) - before
            calls = sum(counts.values())
        finally:
            if isinstance(app.broker, RedisBroker):  # the bench's own keys only
                conn = app.broker.redis
                for key in list(conn.client.scan_iter(match=conn.prefix + "*", count=1000)):
                    conn.client.delete(key)
            app.close()
    print(f"{args.schedulers} schedulers, a 1 s schedule, {args.ticks} ticks, on {args.backend}")
    print(f"ticks sent: {sent} (each once: {sent == args.ticks})")
    print(f"store calls per tick, all schedulers: {calls / args.ticks:.2f}  {dict(counts)}")
    print(f"store calls in the {passes} passes, idle ones: {idle_calls}")
    print(f"mean pass: {elapsed / passes * 1e6:.0f} µs (the tick's send included)")


if __name__ == "__main__":
    main()
