"""How far one Redis goes: N solo workers on one private redis-server, busy and paced.

    python benchmarks/fleet_bench.py [--workers 10,50,100] [--tasks 5000] [--seconds 5]

For each fleet size, N `soloist worker` processes (solo pool, results on the same Redis)
start, and then:

* throughput: `--tasks` no-op tasks are published in one batch; tasks/s from the first
  publish to the last end, and the Redis CPU per task (INFO cpu, used_cpu_user + sys);
* latency: tasks are published one at a time, at most at half that rate, for `--seconds`
  (one producer thread: it may not reach that rate), and the
  time from each publish to its start (chaos_app's ledger) gives p50 and p99.

The workers and the server share this machine's cores, so the figures flatten where the
cores run out, not where Redis does: read the Redis CPU per task, which is the broker's own
cost, beside tasks/s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idle_bench import QUEUE, chaos_env, cpu, start_workers, wait_for

from soloist.brokers.redis_connection import RedisConnection
from tests.support.redis_support import RedisServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _ledger(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def one_size(n: int, tasks: int, seconds: float, tmp: Path) -> str:
    server = RedisServer(tmp, "--appendonly", "no")
    server.start()
    ledger = tmp / f"ledger-{n}.txt"
    env = chaos_env(server.url, ledger)
    from chaos_app import app, work  # reads the ledger's path from the environment

    app.configure(server.url, server.url)
    app.default_queue = QUEUE
    conn = RedisConnection(server.url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_workers(n, env, tmp / "workers.log")
        wait_for(lambda: len(app.broker.workers()) >= n, 120, "the workers")
        before, t0 = cpu(conn), time.monotonic()
        work.map([0] * tasks)
        wait_for(lambda: sum(p[0] == "end" for p in _ledger(ledger)) >= tasks, 600, "the batch")
        elapsed, used = time.monotonic() - t0, cpu(conn) - before
        rate = tasks / elapsed
        sent: dict[str, float] = {}
        pace = 2 / rate
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent[work.delay(0).id] = time.time()
            time.sleep(pace)
        wait_for(lambda: sum(p[0] == "end" for p in _ledger(ledger)) >= tasks + len(sent), 60,
                 "the paced tasks")  # fmt: skip
        starts = {p[1]: float(p[4]) for p in _ledger(ledger) if p[0] == "start"}
        late = sorted(starts[t] - at for t, at in sent.items())
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        return (
            f"{n:4} workers: {rate:7.0f} tasks/s, Redis CPU {used / tasks * 1e6:5.1f} us/task;"
            f" paced at {len(sent) / seconds:.0f}/s: p50 {statistics.median(late) * 1000:.1f} ms,"
            f" p99 {p99 * 1000:.1f} ms"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        conn.close()
        app.close()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="10,50,100")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for n in (int(x) for x in args.workers.split(",")):
        with tempfile.TemporaryDirectory(prefix="soloist-fleet-") as tmp:
            print(one_size(n, args.tasks, args.seconds, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
