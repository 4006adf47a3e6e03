"""Big payloads: throughput and peak RSS with 1 KB, 100 KB and 1 MB arguments, beside a
bare client moving bodies of the same size.

    python benchmarks/payload_bench.py [--brokers redis,sqlite,amqp] [--sizes 1000,100000,1000000]

For each size, a task taking one string argument of that many characters: `task.delay`
from one producer (msg/s, MB/s of bodies), then one solo worker draining the queue in
burst mode (tasks/s, MB/s), each in a process of its own so that its peak RSS (VmHWM) is
its own. The floor, in the same run, is a bare client loop in a process of its own doing
the broker's operations on bodies of the same length as Soloist's (the argument plus the
envelope): one publish each (confirmed on RabbitMQ), and a batched consume of 100 per
round trip or transaction that reads every body (benchmarks/floors.py's operations).
Each size moves about --budget MB (at least 50 messages) through each side. Redis: a key
prefix of its own, deleted after; SQLite: files in a temporary directory; RabbitMQ: queues
of their own, deleted after.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from floors import BATCH, INSERT, AMQPFloor, RedisFloor, SQLiteFloor, chunks, rate
from suite import AMQP_URL, REDIS_URL, reachable
from suite_app import make_app

from soloist.message import Message
from soloist.worker.loop import Worker

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM")) / 1024


#: This process's CPU seconds in its timed part (`timed`).
cpu_used = [0.0]


def timed(n: int, run: Callable[[], object]) -> float:
    """`rate`, keeping the CPU time the run took in `cpu_used`."""
    cpu = time.process_time()
    got = rate(n, run)
    cpu_used[0] = time.process_time() - cpu
    return got


# -- The child processes: each does one side's one half and prints {"rate", "rss"}. --------


def soloist_publish(url: str, results: str, queue: str, size: int, n: int) -> float:
    app = make_app(url, results, queue)
    take = app.tasks["suite.take"]
    data = "x" * size
    take.delay("")  # connect, load the scripts
    app.broker.purge(queue)
    got = timed(n, lambda: [take.delay(data) for _ in range(n)])
    app.close()
    return got


def soloist_execute(url: str, results: str, queue: str, size: int, n: int) -> float:
    app = make_app(url, results, queue)
    app.results.get("payload-warm-up")
    worker = Worker(app, [queue], burst=True)
    got = timed(n, worker.run)
    app.close()
    return got


def floor_for(broker: str, url: str, queue: str) -> Any:
    if broker == "redis":
        return RedisFloor(REDIS_URL, url.split("prefix=")[1])
    if broker == "sqlite":
        return SQLiteFloor(url.removeprefix("sqlite:///"))
    from soloist.brokers.amqp import AMQPBroker

    probe = AMQPBroker(AMQP_URL)
    arguments = probe.topology.work_args(queue)  # the broker's own quorum-queue arguments
    probe.close()
    return AMQPFloor(AMQP_URL, queue, arguments)


def floor_publish(broker: str, url: str, queue: str, size: int, n: int) -> float:
    """One publish per message, left queued for `floor_consume`."""
    floor = floor_for(broker, url, queue)
    body = b"x" * size
    if broker == "redis":
        got = timed(n, lambda: [floor.r.lpush(floor.src, body) for _ in range(n)])
    elif broker == "sqlite":
        insert = floor.db.execute
        got = timed(n, lambda: [insert(INSERT, ("q", body, time.monotonic())) for _ in range(n)])
    else:
        send = floor.ch.basic_publish
        props = floor.props
        got = timed(n, lambda: [send("", queue, body, props, mandatory=True) for _ in range(n)])
        floor.conn.close()
    return got


def floor_consume(broker: str, url: str, queue: str, size: int, n: int) -> float:
    """Batched: BATCH bodies per round trip or transaction, each read, then removed."""
    floor = floor_for(broker, url, queue)
    if broker == "redis":
        r, src, busy = floor.r, floor.src, floor.busy

        def run() -> None:
            for count in chunks(n):
                pipe = r.pipeline(transaction=False)
                for _ in range(count):
                    pipe.lmove(src, busy, "RIGHT", "LEFT")
                for body in pipe.execute():
                    pipe.lrem(busy, 1, body)
                pipe.execute()

        got = timed(n, run)
        floor.close()
    elif broker == "sqlite":
        db = floor.db

        def run() -> None:
            while True:
                db.execute("BEGIN IMMEDIATE")
                receipt, rows = floor._claim(db, BATCH)
                db.execute("COMMIT")
                if not rows:
                    return
                db.execute("BEGIN IMMEDIATE")
                floor._delete(db, receipt, [row[0] for row in rows])
                db.execute("COMMIT")

        got = timed(n, run)
        floor.close()
    else:
        got = timed(n, lambda: floor._consume(n, BATCH))
        floor.close()
    return got


SIDES = {
    "soloist_publish": soloist_publish,
    "soloist_execute": soloist_execute,
    "floor_publish": floor_publish,
    "floor_consume": floor_consume,
}


def child(argv: list[str]) -> None:
    side, broker, url, results, queue, size, n = argv
    logging.basicConfig(level=logging.ERROR)
    fn = SIDES[side]
    if side.startswith("soloist"):
        got = fn(url, results, queue, int(size), int(n))  # type: ignore[operator]
    else:
        got = fn(broker, url, queue, int(size), int(n))  # type: ignore[operator]
    print(json.dumps({"rate": got, "cpu": int(n) / cpu_used[0], "rss": peak_rss_mb()}))


# -- The parent: a fresh place per size and side, the children, the table. ---------------


def run_child(*args: object) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", *(str(a) for a in args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def places(broker: str, tmp: Path) -> tuple[str, str, str]:
    """(broker URL, results URL, queue) of their own."""
    tag = uuid.uuid4().hex[:8]
    if broker == "redis":
        url = f"{REDIS_URL}?prefix=soloist-payload-{tag}:"
        return url, url, "payload"
    if broker == "sqlite":
        url = f"sqlite:///{tmp}/payload-{tag}.db"
        return url, url, "payload"
    return AMQP_URL, "memory://", f"payload-{tag}"


def drop(broker: str, url: str, queue: str) -> None:
    if broker == "redis":
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=url.split("prefix=")[1] + "*", count=1000))
        if keys:
            r.unlink(*keys)
        r.close()
    elif broker == "amqp":
        from soloist.brokers.amqp import AMQPBroker

        amqp = AMQPBroker(AMQP_URL)
        amqp.delete(queue)
        amqp.close()
        floor = floor_for("amqp", AMQP_URL, queue + "-floor")
        floor.close()  # deletes its queue


def envelope(size: int) -> int:
    """Bytes of Soloist's body for a `take` call with a `size`-character argument."""
    app = make_app("memory://", "memory://")
    return len(app.encode(Message("suite.take", ("x" * size,))))


def line(
    broker: str,
    size: int | None,
    n: int | None,
    side: str,
    publish: dict[str, float],
    consume: dict[str, float],
    length: int,
) -> str:
    """One side's figures, or (length 0) the ratios of soloist's to the floor's."""
    out = (
        f"{broker:<7}{'' if size is None else f'{size:,}':>10}{'' if n is None else n:>6}{side:>9}"
    )
    for half in (publish, consume):
        if length:
            mb = half["rate"] * length / 1e6
            out += f"{'':9}{half['rate']:>7.0f}{mb:>7.1f}{half['cpu']:>8.0f}{half['rss']:>8.1f}"
        else:
            out += f"{'':9}{half['rate']:>7.2f}{'':>7}{half['cpu']:>8.2f}{half['rss']:>8.2f}"
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--brokers", default="redis,sqlite,amqp")
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--budget", type=float, default=100, help="MB per size and side")
    parser.add_argument("--max-count", type=int, default=5000)
    args = parser.parse_args()
    half = f"{'/s':>7}{'MB/s':>7}{'/cpu s':>8}{'RSS MB':>8}"
    head = f"{'broker':<7}{'payload':>10}{'n':>6}{'side':>9}  publish{half}  consume{half}"
    print(head, "-" * len(head), sep="\n", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for broker in args.brokers.split(","):
            port = {"redis": 6379, "amqp": 5672}.get(broker)
            if port and not reachable(port):
                print(f"{broker}: skipped, nothing listens on 127.0.0.1:{port}")
                continue
            for size in (int(s) for s in args.sizes.split(",")):
                length = envelope(size)
                n = max(min(args.max_count, int(args.budget * 1e6 / length)), 50)
                url, results, queue = places(broker, tmp)
                try:
                    pub = run_child("soloist_publish", broker, url, results, queue, size, n)
                    exe = run_child("soloist_execute", broker, url, results, queue, size, n)
                    fq = queue + "-floor"
                    fpub = run_child("floor_publish", broker, url, results, fq, length, n)
                    fcon = run_child("floor_consume", broker, url, results, fq, length, n)
                finally:
                    drop(broker, url, queue)
                print(line(broker, size, n, "soloist", pub, exe, length), flush=True)
                print(line(broker, size, n, "floor", fpub, fcon, length), flush=True)
                ratios = [{k: a[k] / b[k] for k in a} for a, b in ((pub, fpub), (exe, fcon))]
                print(line("", None, None, "ratio", *ratios, 0), flush=True)
    print(f"({time.monotonic() - started:.0f} s; /cpu s: per second of the process's CPU time)")


if __name__ == "__main__":
    main()
