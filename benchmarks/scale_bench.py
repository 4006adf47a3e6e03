"""Cost as work grows: publish and execution rates with a backlog already queued, and
`soloist worker --replicas N` beyond the machine's cores.

    python benchmarks/scale_bench.py [--brokers redis,sqlite,amqp] [--sizes 10000,100000,1000000]
    python benchmarks/scale_bench.py --replicas 1,2,4,8 --brokers none [--private-redis]

Backlog. For each broker and each size N, on a fresh queue (a Redis key prefix of its own,
a SQLite file of its own, a RabbitMQ queue of its own; all deleted after): N no-op
messages are queued, then `task.delay` publishes TASKS more (msg/s), then one solo worker
in this process runs TASKS - 100 of them, the oldest, and stops (tasks/s): the queue
holds N throughout. The same with N messages delayed by a day instead (they must not slow
the ready path), and with N delayed by a second, all due by the first claim after the
fill (`due`), on Redis and SQLite; `claim ms` is that first claim's time. Each rate is
read against the same on an empty queue of its own (100 more each round), measured just
before it in each of --rounds rounds (ratio, the median of the rounds': flat is 1.0), on
wall time and on CPU time (`cpu`: steadier on a shared machine; this process's, which
holds the broker's work for SQLite, plus with --private-redis the Redis server's). Also
the worker's start-up check (it reads the queue's depth) and the SQLite `stats()` a
dashboard snapshot makes, per queue.
Memory: Redis `INFO memory` used_memory before and after the fill, per message (on the
shared server other clients move it too: --private-redis, or MEMORY USAGE of a sample of
the keys, shown beside it), and the SQLite file's size per message. RabbitMQ stops at
100,000 (`--amqp-max`).

Replicas. `soloist worker --replicas N --burst` on Redis, for tasks that sleep 5 ms
(ideal: N x 200/s) and for no-op tasks, with the CPU the worker processes and the Redis
server used per task and the cores they kept busy, less those of the same run on an
empty queue (start-up and stop): past the cores, the rate flattens.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floors import rate
from suite import AMQP_URL, REDIS_URL, Setup, env_for, reachable, stamps
from suite_app import make_app

from soloist import App
from soloist.message import Message
from soloist.worker.constants import AUTO_PREFETCH
from soloist.worker.loop import Worker

#: Messages per publish and execution rate: enough for the worker's prefetch to grow.
TASKS = 2_000
FILL_CHUNK = 10_000
DAY = 86_400.0
#: The delay of messages that all fall due before the first claim after the fill.
DUE = 1.0
QUEUE = "scale"


@dataclass
class Target:
    """One broker at one backlog: where its messages live and how to drop them."""

    broker: str
    url: str
    drop: Callable[[], None]
    queue: str = QUEUE


class RedisServer:
    """The Redis the run uses: the shared one, or (`--private-redis`) a redis-server of
    the run's own without persistence, whose INFO memory and CPU count this run alone."""

    def __init__(self) -> None:
        self.url = REDIS_URL
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        self.proc = subprocess.Popen([*cmd, "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not reachable(port):
            if time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)

    def cpu(self) -> float:
        """Seconds of CPU the private server has used (0 for the shared one)."""
        if self.proc is None:
            return 0.0
        import redis

        with redis.Redis.from_url(self.url) as r:
            info = r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


REDIS = RedisServer()


def redis_target() -> Target:
    prefix = f"soloist-scale-{uuid.uuid4().hex[:8]}:"
    return Target("redis", f"{REDIS.url}?prefix={prefix}", lambda: drop_prefix(prefix))


def drop_prefix(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS.url)
    batch: list[bytes] = []
    for key in r.scan_iter(match=prefix + "*", count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)
    r.close()


def sqlite_target(tmp: Path) -> Target:
    path = tmp / f"scale-{uuid.uuid4().hex[:8]}.db"

    def drop() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return Target("sqlite", f"sqlite:///{path}", drop)


def amqp_target() -> Target:
    queue = f"scale-{uuid.uuid4().hex[:8]}"

    def drop() -> None:
        from soloist.brokers.amqp import AMQPBroker

        broker = AMQPBroker(AMQP_URL)
        broker.delete(queue)
        broker.close()

    return Target("amqp", AMQP_URL, drop, queue)


def fill(app: App, queue: str, n: int, delay: float) -> float:
    """N no-op messages on `queue` (delayed by `delay` s), in chunks; seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, n, FILL_CHUNK):
        size = min(FILL_CHUNK, n - start)
        body = app.encode(Message("suite.noop"))
        app.broker.publish_many([(queue, body, delay, 0)] * size)
    return time.perf_counter() - t0


def redis_used(app: App) -> int:
    return int(app.broker.redis.client.info("memory")["used_memory"])  # type: ignore[attr-defined]


def redis_sampled(app: App, queue: str, n: int) -> float:
    """Bytes per message from MEMORY USAGE: a sample of message hashes, plus the sorted
    sets the messages sit in, divided by N."""
    conn = app.broker.redis  # type: ignore[attr-defined]
    r, prefix = conn.client, conn.prefix
    ids = [m for m in r.zrange(f"{prefix}q:{queue}:ready", 0, 99)]
    ids += [m for m in r.zrange(f"{prefix}q:{queue}:delayed", 0, 99)]
    hashes = [r.memory_usage(f"{prefix}m:{i.decode()}") or 0 for i in ids]
    sets = sum(
        r.memory_usage(f"{prefix}q:{queue}:{kind}", samples=1000) or 0
        for kind in ("ready", "delayed")
    )
    return sum(hashes) / max(len(hashes), 1) + sets / max(n, 1)


@dataclass
class Figures:
    fill_s: float
    #: Medians of the rounds, and of each round's ratio to the empty queue's (wall, CPU).
    publish: float
    publish_ratio: float
    publish_cpu_ratio: float
    execute: float
    execute_ratio: float
    execute_cpu_ratio: float
    spread: str
    check_s: float
    stats_s: float | None
    claim_s: float
    bytes_per_msg: float | None
    sampled: float | None = None


def rates(n: int, run: Callable[[], object]) -> tuple[float, float]:
    """(per second of wall time, per second of CPU time: this process's, plus the private
    Redis server's). On a shared machine the CPU time is the steadier; it holds the
    broker's own work for SQLite (in this process) and a private Redis, not RabbitMQ's."""
    cpu = time.process_time() + REDIS.cpu()
    wall = rate(n, run)
    return wall, n / (time.process_time() + REDIS.cpu() - cpu)


class Bench:
    """A broker's app on one queue, to fill and to time publishing and running on."""

    def __init__(self, target: Target, tasks: int) -> None:
        self.target, self.tasks = target, tasks
        results = "memory://" if target.broker == "amqp" else target.url
        self.app = make_app(target.url, results, target.queue)
        self.noop = self.app.tasks["suite.noop"]
        self.noop.delay()  # connect, load the scripts
        self.app.broker.purge(target.queue)
        self.app.results.get("scale-warm-up")

    def publish(self) -> tuple[float, float]:
        return rates(self.tasks, lambda: [self.noop.delay() for _ in range(self.tasks)])

    def execute(self) -> tuple[tuple[float, float], float]:
        """(rates, seconds of the worker's start-up check): the oldest of the queue run,
        all but AUTO_PREFETCH of those just published: a worker that finds its queue
        empty waits FETCH_WAIT for more, which the empty queue's rate must not count."""
        runs = self.tasks - AUTO_PREFETCH
        # The solo pool is worn after `tasks` tasks: the worker stops, the backlog left.
        # Not owning the process: a worker that does ends its children, the private Redis.
        worker = Worker(
            self.app,
            [self.target.queue],
            burst=True,
            max_tasks_per_child=runs,
            owns_process=False,
        )
        t0 = time.perf_counter()
        worker.check()
        check_s = time.perf_counter() - t0
        worker.check = lambda: None  # type: ignore[method-assign]  # timed apart, above
        return rates(runs, worker.run), check_s

    def close(self) -> None:
        self.app.close()
        self.target.drop()


def measure(empty: Bench, full: Bench, n: int, delay: float, rounds: int) -> Figures:
    """Fill `full` with N messages, then rounds of publishing and running on it and on
    `empty` in turn (a shared machine drifts: each round's ratio is read on its own)."""
    app, queue, broker = full.app, full.target.queue, full.target.broker
    before = redis_used(app) if broker == "redis" else 0
    took = fill(app, queue, n, delay)
    if delay == DUE:
        time.sleep(DUE)  # all N due now, none made ready yet
    t0 = time.perf_counter()
    app.broker.release(app.broker.fetch([queue], 1, 60, 0))
    claim_s = time.perf_counter() - t0
    used = sampled = None
    if broker == "redis" and n:
        used = (redis_used(app) - before) / n
        sampled = redis_sampled(app, queue, n)
    elif broker == "sqlite" and n:
        path = app.broker.db.path  # type: ignore[attr-defined]
        wal = Path(path + "-wal")
        used = (os.path.getsize(path) + (wal.stat().st_size if wal.exists() else 0)) / n
    stats_s = None
    if broker == "sqlite":
        t0 = time.perf_counter()
        app.broker.stats(queue)
        stats_s = time.perf_counter() - t0
    publish: list[tuple[float, float]] = []
    execute: list[tuple[float, float]] = []
    check_s: list[float] = []
    pub_ratio: list[tuple[float, float]] = []
    exec_ratio: list[tuple[float, float]] = []
    for _ in range(rounds):
        # The full queue holds N, then N + tasks, then N again.
        base = empty.publish()
        publish.append(full.publish())
        pub_ratio.append((publish[-1][0] / base[0], publish[-1][1] / base[1]))
        base = empty.execute()[0]
        got, check = full.execute()
        execute.append(got)
        check_s.append(check)
        exec_ratio.append((got[0] / base[0], got[1] / base[1]))
    med = statistics.median
    walls = [r[0] for r in pub_ratio], [r[0] for r in exec_ratio]
    spread = " / ".join(f"{min(w):.2f}-{max(w):.2f}" for w in walls)
    return Figures(
        took,
        med(p[0] for p in publish),
        med(r[0] for r in pub_ratio),
        med(r[1] for r in pub_ratio),
        med(e[0] for e in execute),
        med(r[0] for r in exec_ratio),
        med(r[1] for r in exec_ratio),
        spread,
        med(check_s),
        stats_s,
        claim_s,
        used,
        sampled,
    )


def backlog(
    brokers: list[str], sizes: list[int], amqp_max: int, tasks: int, rounds: int, tmp: Path
) -> None:
    makers: dict[str, Callable[[], Target]] = {
        "redis": redis_target,
        "sqlite": lambda: sqlite_target(tmp),
        "amqp": amqp_target,
    }
    head = (
        f"{'broker':<7}{'backlog':>18}{'fill s':>8}{'publish/s':>11}{'ratio':>7}{'cpu':>6}"
        f"{'tasks/s':>9}{'ratio':>7}{'cpu':>6}{'check ms':>10}{'stats ms':>10}{'claim ms':>10}"
        f"{'B/msg':>8}"
        f"{'sampled':>9}"
        "  wall ratio ranges"
    )
    print(head, "-" * len(head), sep="\n", flush=True)
    for broker in brokers:
        port = {"redis": 6379, "amqp": 5672}.get(broker)
        if port and not reachable(port):
            print(f"{broker}: skipped, not reachable")
            continue
        kinds = [("ready", 0.0)]
        if broker != "amqp":  # its delays wait in queues of their own
            kinds += [("delayed", DAY), ("due", DUE)]
        empty = Bench(makers[broker](), tasks)
        try:
            for n in sizes:
                if broker == "amqp" and n > amqp_max:
                    continue
                for kind, delay in kinds:
                    full = Bench(makers[broker](), tasks)
                    try:
                        got = measure(empty, full, n, delay, rounds)
                    finally:
                        full.close()
                    print(row(broker, f"{n:,} {kind}", got), flush=True)
        finally:
            empty.close()


def row(broker: str, label: str, f: Figures) -> str:
    def opt(value: float | None, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    return (
        f"{broker:<7}{label:>18}{f.fill_s:>8.1f}{f.publish:>11.0f}{f.publish_ratio:>7.2f}"
        f"{f.publish_cpu_ratio:>6.2f}{f.execute:>9.0f}{f.execute_ratio:>7.2f}"
        f"{f.execute_cpu_ratio:>6.2f}{f.check_s * 1000:>10.1f}"
        f"{opt(f.stats_s and f.stats_s * 1000, '{:.1f}'):>10}{f.claim_s * 1000:>10.1f}"
        f"{opt(f.bytes_per_msg, '{:.0f}'):>8}"
        f"{opt(f.sampled, '{:.0f}'):>9}  {f.spread}"
    )


def redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def burst(target: Target, count: int, stamp_file: Path, r: Any) -> tuple[float, float, float]:
    """(CPU s of the replicas, CPU s of the Redis server, wall s) of one
    `soloist worker --replicas count --burst` run."""
    setup = Setup("redis", target.url, target.url, None, "", 0, 0, 0, lambda: None)  # type: ignore[arg-type]
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "suite_app:app", "-Q", QUEUE]
    cmd += ["--replicas", str(count), "--burst", "-l", "error"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server, t0 = redis_cpu(r), time.perf_counter()
    subprocess.run(cmd, env=env_for(setup, QUEUE, stamp_file), timeout=600, check=True)
    server, took = redis_cpu(r) - server, time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu, server, took


def replicas_run(target: Target, task: str, total: int, count: int, tmp: Path, r: Any) -> str:
    """One line of the replicas table: `total` calls of `task`, `count` replicas. The
    same run on an empty queue first, to take the replicas' start and stop out of the
    CPU per task and of the cores kept busy."""
    stamp_file = tmp / f"{uuid.uuid4().hex[:8]}.stamps"
    idle_cpu, idle_server, idle_took = burst(target, count, stamp_file, r)
    app = make_app(target.url, target.url, QUEUE)
    app.tasks[task].starmap([()] * total)
    app.close()
    cpu, server, took = burst(target, count, stamp_file, r)
    cpu, server, took = cpu - idle_cpu, server - idle_server, took - idle_took
    ends = sorted(stamps(stamp_file))
    # The middle 80% of the run: start-up and the last replicas draining left out.
    lo, hi = ends[len(ends) // 10], ends[len(ends) * 9 // 10]
    got = (len(ends) * 8 // 10) / (hi - lo)
    ideal = f"{count * 200}" if task == "suite.nap" else "-"
    ratio = f"{got / (count * 200):.2f}" if task == "suite.nap" else "-"
    return (
        f"{task.split('.')[1]:<10}{count:>9}{got:>9.0f}{ideal:>7}{ratio:>7}"
        f"{cpu / total * 1e6:>20.0f}{server / total * 1e6:>19.0f}{(cpu + server) / took:>12.2f}"
    )


def replicas(counts: list[int], tmp: Path, naps: int, noops: int) -> None:
    """Tasks/s of `soloist worker --replicas N --burst` on Redis, with CPU per task."""
    import redis

    r = redis.Redis.from_url(REDIS.url)
    head = (
        f"{'tasks':<10}{'replicas':>9}{'tasks/s':>9}{'ideal':>7}{'ratio':>7}"
        f"{'worker CPU µs/task':>20}{'Redis CPU µs/task':>19}{'cores busy':>12}"
    )
    print(head, "-" * len(head), sep="\n", flush=True)
    for task, total in (("suite.nap", naps), ("suite.tick", noops)):
        for count in counts:
            target = redis_target()
            try:
                print(replicas_run(target, task, total, count, tmp, r), flush=True)
            finally:
                target.drop()
    r.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--brokers", default="redis,sqlite,amqp", help="or none")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--amqp-max", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--rounds", type=int, default=9, help="publish+execute rounds per size")
    parser.add_argument("--replicas", default="", help="e.g. 1,2,4,8")
    parser.add_argument(
        "--private-redis", action="store_true", help="a redis-server of the run's own"
    )
    parser.add_argument("--naps", type=int, default=2000, help="5 ms tasks per replicas run")
    parser.add_argument("--noops", type=int, default=20000, help="no-op tasks per replicas run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # Killed: drop what this run queued on the shared servers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.private_redis:
            REDIS.start(tmp)
        try:
            brokers = [b for b in args.brokers.split(",") if b != "none"]
            if brokers:
                sizes = [int(s) for s in args.sizes.split(",")]
                backlog(brokers, sizes, args.amqp_max, args.tasks, args.rounds, tmp)
            if args.replicas and reachable(6379):
                counts = [int(c) for c in args.replicas.split(",")]
                replicas(counts, tmp, args.naps, args.noops)
        finally:
            REDIS.stop()
    print(f"({time.monotonic() - started:.0f} s; ratio = against the empty queue, or the ideal)")


if __name__ == "__main__":
    main()
