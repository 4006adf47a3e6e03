"""Acknowledged publishes lost in a Sentinel failover, with and without `?wait_replicas=1`.

    python benchmarks/sentinel_bench.py [--seconds 3] [--threads 4] [--rounds 3] [--lag 1]

Each round, for each mode, builds a private Sentinel group (master, two replicas, three
Sentinels; tests/support/sentinel_support.py), publishes from `--threads` producer threads as fast
as they can, SIGKILLs the master after `--seconds`, and keeps publishing (through the
failover; a publish that raises is not acknowledged and not counted) for as long again.
Then every acknowledged publish is looked up on the new master by id and body: a missing
one is an acknowledged publish lost. On one machine a replica is microseconds behind, so
each mode runs twice: as it is, and with the replicas paused (SIGSTOP) for `--lag` seconds
before the kill, as replicas behind a slow link or disk fall behind. Also reported:
publishes per second before the kill (what WAIT costs) and the longest gap between two
acknowledged publishes of one producer (the failover, seen by producers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from soloist.brokers.redis import RedisBroker  # noqa: E402
from soloist.errors import BrokerUnavailable  # noqa: E402
from tests.support.sentinel_support import SentinelGroup  # noqa: E402


def one_round(
    wait: bool, seconds: float, threads: int, lag: float
) -> tuple[int, int, float, float]:
    """(acknowledged, lost, publishes/s before the kill, longest publish gap in s)."""
    with tempfile.TemporaryDirectory(prefix="soloist-sentinel-") as tmp:
        group = SentinelGroup(Path(tmp))
        try:
            group.start()
            url = group.url(**({"wait_replicas": 1} if wait else {}))
            acked: list[tuple[str, bytes]] = []
            gaps: list[float] = []
            stop = threading.Event()
            lock = threading.Lock()

            def produce() -> None:
                broker = RedisBroker(url + ("&" if wait else "?") + "reconnect_timeout=30")
                last = time.monotonic()
                while not stop.is_set():
                    body = uuid.uuid4().bytes
                    try:
                        mid = broker.publish("q", body)
                    except BrokerUnavailable:
                        continue
                    now = time.monotonic()
                    with lock:
                        acked.append((mid, body))
                        gaps.append(now - last)
                    last = now
                broker.close()

            workers = [threading.Thread(target=produce) for _ in range(threads)]
            for w in workers:
                w.start()
            time.sleep(seconds)
            with lock:
                before = len(acked)
            group.kill_master(lag)
            time.sleep(seconds)
            stop.set()
            for w in workers:
                w.join()
            check = RedisBroker(url)
            lost = 0
            for mid, body in acked:
                stored = check.redis.command("HGET", f"{check.prefix}m:{mid}", "b")
                lost += stored != body
            check.close()
            return len(acked), lost, before / seconds, max(gaps, default=0.0)
        finally:
            group.stop()


def _mode(lag: float, wait: int) -> str:
    return f"{'wait_replicas=1' if wait else 'no wait'}, replicas {lag:g} s behind"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lag", type=float, default=1.0)
    args = parser.parse_args()
    totals = {key: [0, 0] for key in [(lag, w) for lag in (0.0, args.lag) for w in (0, 1)]}
    for n in range(args.rounds):
        for lag, wait in totals:  # interleaved: every mode sees the same machine
            acked, lost, rate, gap = one_round(bool(wait), args.seconds, args.threads, lag)
            totals[lag, wait][0] += acked
            totals[lag, wait][1] += lost
            print(f"round {n + 1} {_mode(lag, wait)}: {acked} acknowledged, {lost} lost,"
                  f" {rate:.0f} publishes/s before the kill, longest gap {gap:.1f} s")  # fmt: skip
    for (lag, wait), (acked, lost) in totals.items():
        print(f"{_mode(lag, wait)}: {lost} of {acked} acknowledged publishes lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
