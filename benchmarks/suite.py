"""Soloist against the floor, for every broker reachable here: one table.

    python benchmarks/suite.py [--quick] [--brokers sqlite,redis,amqp] [--no-replicas]

For each broker: publish rate from one producer (`task.delay` one by one; `task.map`
batched), no-op execution rate of one solo worker on a pre-filled queue (results off and
on; results off also against the same worker on the memory broker, which does no I/O;
on RabbitMQ, results off at `--settle-batch 100` too, where settling each task costs most),
enqueue-to-start latency of an idle `soloist worker` process, its start-up time to the
first task, and its peak RSS. Beside each figure, the floor measured in the same run by
a bare client loop doing the same broker operations (benchmarks/floors.py), unbatched and
batched, and the ratio to it. Then tasks/s of `soloist worker --replicas 1, 2, 4` on
tasks that sleep 5 ms (Redis). The machine may be shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from floors import AMQPFloor, RedisFloor, SQLiteFloor, percentiles, rate
from suite_app import STAMP, make_app

from soloist.worker.loop import Worker

HERE = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class Floor(Protocol):
    def publish(self, n: int) -> float: ...
    def publish_batched(self, n: int) -> float: ...
    def consume(self, n: int) -> float: ...
    def consume_batched(self, n: int, each: Callable[[bytes], object] = ...) -> float: ...
    def latency(self, rounds: int) -> tuple[float, float]: ...
    def close(self) -> None: ...


@dataclass
class Setup:
    name: str
    broker: str  # URL
    results: str  # URL
    floor: Floor
    #: A bare process that imports the client and does one round trip (start-up floor).
    bare: str
    n: int  # messages per publish rate and unbatched consume floor
    #: Tasks per execution rate and its batched floor: enough for a steady state, since a
    #: worker starts at prefetch 1 and the floor at BATCH.
    tasks: int
    rounds: int  # latency samples
    cleanup: Callable[[], None]
    #: A `--settle-batch` to measure results off at too, beside the default (1).
    settle_batch: int | None = None


@dataclass
class Row:
    broker: str
    measure: str
    value: float
    floor: float | None = None
    batched: float | None = None
    fmt: str = "{:.0f}"


#: Every queue the run made, for the clean-up on RabbitMQ (Redis and SQLite drop all).
_queues: list[str] = []


def new_queue(kind: str) -> str:
    _queues.append(f"suite-{kind}-{uuid.uuid4().hex[:8]}")
    return _queues[-1]


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stamps(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def wait_for_stamps(path: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (path.stat().st_size if path.exists() else 0) < count * STAMP:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} stamps not written in {timeout}s")
        time.sleep(0.0002)


def env_for(setup: Setup, queue: str, stamp_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SOLOIST_BROKER_URL=setup.broker,
        SOLOIST_RESULT_URL=setup.results,
        SUITE_STAMPS=str(stamp_file),
        SUITE_QUEUE=queue,
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    return env


def execution_rate(
    setup: Setup, results: bool, broker: str | None = None, settle_batch: int = 1
) -> float:
    """No-op tasks/s of one solo worker in this process, burst mode, on a full queue (of
    `broker`, else the setup's), settling `settle_batch` tasks at a time."""
    queue = new_queue("exec")
    app = make_app(broker or setup.broker, setup.results, queue)
    app.tasks["suite.noop_result" if results else "suite.noop"].starmap([()] * setup.tasks)
    app.results.get("suite-warm-up")  # import and connect the result store before timing
    worker = Worker(app, [queue], burst=True, settle_batch=settle_batch)
    try:
        return rate(setup.tasks, worker.run)
    finally:
        app.close()


def publish_rates(setup: Setup) -> tuple[float, float]:
    queue = new_queue("pub")
    app = make_app(setup.broker, setup.results, queue)
    noop = app.tasks["suite.noop"]
    one = rate(setup.n, lambda: [noop.delay() for _ in range(setup.n)])
    batched = rate(setup.n, lambda: noop.starmap([()] * setup.n))
    app.broker.purge(queue)
    app.close()
    return one, batched


def worker_process(setup: Setup, tmp: Path) -> tuple[float, float, float, float]:
    """(start-up s, latency p50 ms, p99 ms, peak RSS MB) of a `soloist worker` process."""
    queue = new_queue("proc")
    stamp_file = tmp / f"{queue}.stamps"
    app = make_app(setup.broker, setup.results, queue)
    stamp, noop = app.tasks["suite.stamp"], app.tasks["suite.noop"]
    t0 = time.time()
    stamp.delay(t0)
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "suite_app:app", "-Q", queue]
    spawned = time.time()
    proc = subprocess.Popen([*cmd, "-l", "error"], env=env_for(setup, queue, stamp_file))
    try:
        wait_for_stamps(stamp_file, 1)
        startup = stamps(stamp_file)[0] - (spawned - t0)
        for i in range(setup.rounds):
            time.sleep(0.005)
            stamp.delay(time.time())
            wait_for_stamps(stamp_file, i + 2)
        p50, p99 = percentiles([s * 1000 for s in stamps(stamp_file)[1:]])
        noop.starmap([()] * setup.n)  # a busy spell, for the peak RSS
        while app.broker.depth(queue):
            time.sleep(0.05)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        app.close()
    return startup, p50, p99, rss


def peak_rss_mb(pid: int) -> float:
    # VmHWM starts afresh at exec; getrusage's maxrss would count the fork of this process.
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM")) / 1024


def bare_process(setup: Setup) -> tuple[float, float]:
    """(seconds from spawn to exit, peak RSS MB) of the bare client process."""
    script = f"{setup.bare}\nprint(open('/proc/self/status').read())"
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    took = time.time() - t0
    peak = next(int(x.split()[1]) for x in out.stdout.splitlines() if x.startswith("VmHWM"))
    return took, peak / 1024


def measure(setup: Setup, tmp: Path) -> list[Row]:
    name, floor, n = setup.name, setup.floor, setup.n
    publish, publish_many = publish_rates(setup)
    pub_floor, pub_batched = floor.publish(n), floor.publish_batched(n)
    off, on = execution_rate(setup, False), execution_rate(setup, True)
    # The same worker on the memory broker (no I/O): what the worker's own Python allows.
    memory = execution_rate(setup, False, "memory://")
    batch = setup.settle_batch
    batched = execution_rate(setup, False, settle_batch=batch) if batch else None
    con_floor, con_batched = floor.consume(n), floor.consume_batched(setup.tasks)
    startup, p50, p99, rss = worker_process(setup, tmp)
    f50, f99 = floor.latency(setup.rounds)
    bare_start, bare_rss = bare_process(setup)
    at_batch = []
    if batched is not None:
        label = f"  --settle-batch {batch} (/s)"
        at_batch = [Row(name, label, batched, con_floor, con_batched)]
    return [
        Row(name, "publish, task.delay (msg/s)", publish, pub_floor, pub_batched),
        Row(name, "publish, task.map (msg/s)", publish_many, pub_floor, pub_batched),
        Row(name, "no-op tasks, results off (/s)", off, con_floor, con_batched),
        *at_batch,
        Row(name, "no-op tasks, results on (/s)", on, con_floor, con_batched),
        Row(name, "  results on / results off", on / off, fmt="{:.2f}"),
        Row(name, "  results off / memory broker", off / memory, fmt="{:.2f}"),
        Row(name, "enqueue-to-start p50 (ms)", p50, f50, fmt="{:.2f}"),
        Row(name, "enqueue-to-start p99 (ms)", p99, f99, fmt="{:.2f}"),
        Row(name, "worker start to 1st task (s)", startup, bare_start, fmt="{:.3f}"),
        Row(name, "worker peak RSS (MB)", rss, bare_rss, fmt="{:.1f}"),
    ]


def replicas(tmp: Path, tasks: int) -> list[Row]:
    """Tasks/s of `--replicas N` on 5 ms sleeps, against N x 200/s (no overhead at all)."""
    rows = []
    for count in (1, 2, 4):
        prefix = f"soloist-suite-{uuid.uuid4().hex[:8]}:"
        queue = "naps"
        url = f"{REDIS_URL}?prefix={prefix}"
        setup = Setup("redis", url, url, None, "", 0, 0, 0, lambda: None)  # type: ignore[arg-type]
        stamp_file = tmp / f"naps-{count}.stamps"
        app = make_app(url, url, queue)
        app.tasks["suite.nap"].starmap([()] * tasks)
        cmd = [sys.executable, "-m", "soloist", "worker", "-A", "suite_app:app", "-Q", queue]
        cmd += ["--replicas", str(count), "--burst", "-l", "error"]
        subprocess.run(cmd, env=env_for(setup, queue, stamp_file), timeout=300, check=True)
        ends = sorted(stamps(stamp_file))
        got = (len(ends) - 1) / (ends[-1] - ends[0])
        ideal = count / 0.005
        rows.append(Row("redis", f"--replicas {count}, 5 ms tasks (/s)", got, ideal))
        _drop_prefix(prefix)
        app.close()
    return rows


def _drop_prefix(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def setups(names: list[str], quick: bool, tmp: Path) -> list[Setup | str]:
    """A Setup per broker, or the line saying why it is skipped."""
    scale = 0.25 if quick else 1.0
    out: list[Setup | str] = []
    for name in names:
        if name == "sqlite":
            url = f"sqlite:///{tmp}/suite.db"
            out.append(
                Setup(
                    name,
                    url,
                    url,
                    SQLiteFloor(str(tmp / "floor.db")),
                    f"import sqlite3; sqlite3.connect({str(tmp / 'f.db')!r}).execute('select 1')",
                    int(4000 * scale),
                    int(20000 * scale),
                    int(200 * scale),
                    lambda: None,
                )
            )
        elif name == "redis":
            if not reachable(6379):
                out.append("redis: skipped, nothing listens on 127.0.0.1:6379")
                continue
            prefix = f"soloist-suite-{uuid.uuid4().hex[:8]}:"
            url = f"{REDIS_URL}?prefix={prefix}"
            out.append(
                Setup(
                    name,
                    url,
                    url,
                    RedisFloor(REDIS_URL, prefix),
                    f"import redis; redis.Redis.from_url({REDIS_URL!r}).ping()",
                    int(20000 * scale),
                    int(20000 * scale),
                    int(300 * scale),
                    lambda prefix=prefix: _drop_prefix(prefix),  # type: ignore[misc]
                )
            )
        elif name == "amqp":
            if not reachable(5672):
                out.append("amqp: skipped, nothing listens on 127.0.0.1:5672")
                continue
            from soloist.brokers.amqp import AMQPBroker

            results = f"sqlite:///{tmp}/amqp-results.db"
            if reachable(6379):
                results = f"{REDIS_URL}?prefix=soloist-suite-{uuid.uuid4().hex[:8]}:"
            probe = AMQPBroker(AMQP_URL)
            queue = f"suite-floor-{uuid.uuid4().hex[:8]}"
            arguments = probe.topology.work_args(queue)  # the broker's own quorum-queue arguments
            probe.close()
            out.append(
                Setup(
                    name,
                    AMQP_URL,
                    results,
                    AMQPFloor(AMQP_URL, queue, arguments),
                    f"import pika; pika.BlockingConnection(pika.URLParameters({AMQP_URL!r}))",
                    int(1500 * scale),
                    int(8000 * scale),
                    int(150 * scale),
                    _delete_amqp_queues,
                    # Each task's ack is a Raft command: what the documented batch buys.
                    settle_batch=100,
                )
            )
        else:
            raise SystemExit(f"unknown broker {name!r}")
    return out


def _delete_amqp_queues() -> None:
    from soloist.brokers.amqp import AMQPBroker

    broker = AMQPBroker(AMQP_URL)
    for queue in _queues:
        broker.delete(queue)
    broker.close()


def table(rows: list[Row], skipped: list[str]) -> str:
    head = f"{'broker':<7}{'measure':<32}{'soloist':>10}{'floor':>10}{'ratio':>7}"
    head += f"{'batched':>10}{'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r.broker:<7}{r.measure:<32}{r.fmt.format(r.value):>10}"
        for floor in (r.floor, r.batched):
            if floor is not None:
                line += f"{r.fmt.format(floor):>10}{r.value / floor:>7.2f}"
        lines.append(line)
    return "\n".join(lines + skipped)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    parser.add_argument("--brokers", default="sqlite,redis,amqp")
    parser.add_argument("--no-replicas", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows: list[Row] = []
    skipped: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for setup in setups(args.brokers.split(","), args.quick, tmp):
            if isinstance(setup, str):
                skipped.append(setup)
                continue
            try:
                rows += measure(setup, tmp)
            finally:
                setup.floor.close()
                setup.cleanup()
        if not args.no_replicas and reachable(6379):
            rows += replicas(tmp, 100 if args.quick else 400)
    print(table(rows, skipped))
    took = time.monotonic() - started
    print(f"({took:.0f} s; ratio = soloist / floor; for ms, s and MB lower is better)")


if __name__ == "__main__":
    main()
