"""What idle workers cost a Redis server (or themselves, on SQLite), and how fast they wake.

    python benchmarks/idle_bench.py [--workers 20] [--seconds 10] [--wakeups 20] [--sqlite]

A private redis-server (never the shared one) serves N idle `soloist worker` processes
(solo pool, one queue, results on the same server, as in production: the keeper reads the
revocation log there). After they settle, the server's statistics are reset and read again
`--seconds` later:

* Redis CPU per idle worker per second, from INFO cpu (used_cpu_user + used_cpu_sys, less
  the same server's CPU over as long with no worker: its own cron), and from INFO
  commandstats (the usec of the commands clients sent; commands a script calls are counted
  inside its EVALSHA and are listed apart, not summed);
* the commands per worker per second, by name.

With --sqlite the workers share one SQLite file instead (broker and results), and what
is reported is the CPU the worker processes' threads run (from /proc/<pid>/task/*/schedstat)
per idle worker per second: SQLite has no server, its cost is each worker's own polling.
The same figure is printed for Redis workers.

Then the wake-up: `--wakeups` tasks are published one at a time, at random moments, to the
idle fleet, and the time from publish to the task's start (the ledger line chaos_app
writes) is reported as p50 and max. Noisy shared machines: compare runs of the same
command, not absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from soloist.brokers.redis_connection import RedisConnection  # noqa: E402
from soloist.task import Task  # noqa: E402
from tests.support.redis_support import RedisServer  # noqa: E402

QUEUE = "idle"
#: Commands the workers send; any other name in commandstats was called by a script (the
#: benchmark's own INFO and CONFIG RESETSTAT are left out of the total).
TOP_LEVEL = {"evalsha", "eval", "blpop", "blmove", "get", "script|load", "ping", "hello",
             "client|setinfo", "select"}  # fmt: skip


def info(conn: RedisConnection, section: str) -> dict[str, str]:
    text = conn.command("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def cpu(conn: RedisConnection) -> float:
    fields = info(conn, "cpu")
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def commandstats(conn: RedisConnection) -> dict[str, tuple[int, int]]:
    """name -> (calls, usec)."""
    out = {}
    for key, value in info(conn, "commandstats").items():
        fields = dict(part.split("=") for part in value.strip().split(","))
        out[key.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
    return out


def measure(conn: RedisConnection, seconds: float) -> tuple[float, dict[str, tuple[int, int]]]:
    conn.command("CONFIG", "RESETSTAT")  # a private server: ours to reset
    before = cpu(conn)
    time.sleep(seconds)
    return cpu(conn) - before, commandstats(conn)


def chaos_env(url: str, ledger: Path) -> dict[str, str]:
    """The environment of workers running chaos_app on `url` (broker and results) with
    `ledger`; the ledger and queue are set here too, for chaos_app imported after."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
        "SOLOIST_BROKER_URL": url,
        "SOLOIST_RESULT_URL": url,
        "CHAOS_LEDGER": str(ledger),
        "CHAOS_QUEUE": QUEUE,
    }
    os.environ.update({k: env[k] for k in ("CHAOS_LEDGER", "CHAOS_QUEUE")})
    return env


def start_workers(n: int, env: dict[str, str], log: Path) -> list[subprocess.Popen[bytes]]:
    out = log.open("a")
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "chaos_app:app", "-Q", QUEUE,
           "--loglevel", "warning"]  # fmt: skip
    return [
        subprocess.Popen(cmd, env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(n)
    ]


def startup_timeout(workers: int) -> float:
    """How long `workers` workers may take to start and register: 100 took 40-55 s on a
    loaded 2-core machine, so two seconds each on top of half a minute."""
    return 30 + 2.0 * workers


def process_cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds the processes' threads have run so far (Linux schedstat: nanoseconds,
    where /proc/<pid>/stat counts 10 ms ticks, too coarse for one idle worker)."""
    total = 0
    for proc in procs:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def wakeups(work: Task[..., None], ledger: Path, count: int) -> list[float]:
    """Publish `count` tasks one at a time; seconds from each publish to its start."""
    rng = random.Random(7)
    out = []
    for _ in range(count):
        time.sleep(rng.uniform(0.2, 1.2))  # a moment anywhere in the fleet's fetch cycle
        lines = (ledger.read_text().count("\n") if ledger.exists() else 0) + 2
        sent = time.time()
        work.delay(0)
        wait_for(
            lambda lines=lines: ledger.exists() and ledger.read_text().count("\n") >= lines,
            10,
            "a task to run",
        )
        start = [ln for ln in ledger.read_text().splitlines() if ln.startswith("start")][-1]
        out.append(float(start.split()[4]) - sent)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--wakeups", type=int, default=20)
    parser.add_argument("--sqlite", action="store_true", help="one SQLite file, not Redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soloist-idle-") as tmp:
        server = None
        if args.sqlite:
            url = f"sqlite:///{tmp}/broker.db"
        else:
            server = RedisServer(Path(tmp), "--appendonly", "no")
            server.start()
            url = server.url
        ledger = Path(tmp) / "ledger.txt"
        env = chaos_env(url, ledger)
        from chaos_app import app, work  # reads the ledger's path from the environment

        app.configure(url, url)
        app.default_queue = QUEUE
        conn = RedisConnection(url) if server else None
        procs: list[subprocess.Popen[bytes]] = []
        try:
            floor_cpu = measure(conn, args.seconds)[0] if conn else 0.0
            procs = start_workers(args.workers, env, Path(tmp) / "workers.log")
            wait_for(
                lambda: len(app.broker.workers()) >= args.workers,
                startup_timeout(args.workers),
                "the workers",
            )
            time.sleep(2)
            per = 1e6 / (args.workers * args.seconds)
            own = process_cpu(procs)
            if conn:
                used, stats = measure(conn, args.seconds)
            else:
                time.sleep(args.seconds)
            own = process_cpu(procs) - own
            where = "private Redis" if conn else "one SQLite file"
            print(f"{args.workers} idle workers, {args.seconds:g} s, {where}")
            print(f"  worker CPU: {own * per:.0f} us per worker per second")
            if conn:
                redis_figures(floor_cpu, used, stats, per, args.seconds)
            late = wakeups(work, ledger, args.wakeups)
            print(f"  wake-up, publish to start, {len(late)} tasks:"
                  f" p50 {statistics.median(late) * 1000:.1f} ms,"
                  f" max {max(late) * 1000:.1f} ms")  # fmt: skip
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if conn:
                conn.close()
            if server:
                server.stop()
    return 0


def redis_figures(
    floor_cpu: float, used: float, stats: dict[str, tuple[int, int]], per: float, seconds: float
) -> None:
    floor = floor_cpu * 1e6 / seconds
    print(f"  Redis CPU (INFO cpu, less {floor:.0f} us/s with no worker):"
          f" {(used - floor_cpu) * per:.1f} us per worker per second")  # fmt: skip
    top = sum(u for name, (_, u) in stats.items() if name in TOP_LEVEL)
    print(f"  commandstats, commands clients sent: {top * per / 1e6:.1f} us"
          " per worker per second")  # fmt: skip
    for name, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        if name in ("info", "config|resetstat"):
            continue
        where = "" if name in TOP_LEVEL else " (inside scripts)"
        print(f"    {name:20} {calls * per / 1e6:6.2f} calls/s/worker,"
              f" {usec / max(calls, 1):6.1f} us each{where}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
