"""Redis Cluster: broker throughput and Redis CPU with 3 shards against 1, same run.

    python benchmarks/cluster_bench.py [--queues 12] [--procs 3] [-n 1000] [--rounds 3]

Each round builds, one after the other, three private setups on free ports: a plain
redis-server (redis://, the one-server broker), a 1-master cluster and a 3-master cluster
(redis+cluster://, tests/support/redis_cluster_support.py). On each, `--queues` queues
(which the 3-master cluster spreads over its shards) get `-n` messages each from
publish_many, then `--procs` consumer processes drain them (each takes the queues in its
own order: fetch 100, ack_many), as busy workers' broker calls would. Queues land on the
shards by their names' hash (the default 12 go 4, 5 and 3 on 3 shards), as real ones do.

Reported per setup: messages/s published one by one (2,000, as `send_task` does; with the
producer's CPU per publish, steadier than wall clock on a busy machine) and with
publish_many, and consumed (wall clock), and the Redis CPU
(INFO used_cpu_user + used_cpu_sys, summed over the nodes, and on the busiest node) per
message consumed, in µs. On one machine the clients and every shard share its cores, so
throughput shows what the cluster client costs; the busiest shard's CPU per message is
what bounds a cluster whose shards each have a machine (or a core) of their own.

Then `--procs` `soloist worker --burst` processes drain `--tasks` tasks (suite_app's
noop_result: results stored) from the same queues: tasks/s, and the workers' and Redis's
CPU per task. On a cluster a task's result lies in another slot than its ack, so the
worker stores it before pipelining the ack: a round trip per task that one server saves.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from suite_app import make_app  # noqa: E402  (benchmarks/, on sys.path as the script's own)

from soloist.brokers import from_url  # noqa: E402
from tests.support.redis_cluster_support import RedisCluster  # noqa: E402
from tests.support.redis_support import RedisServer  # noqa: E402

BODY = b'{"task": "noop", "args": [], "kwargs": {}}' + b" " * 100
BATCH = 100
#: Publishes made one call each (as a producer's send_task), before the batched ones.
SINGLE = 2000


def consume(url: str, queues: list[str], start: object) -> None:
    broker = from_url(url)
    start.wait()  # type: ignore[attr-defined]
    while got := broker.fetch(queues, BATCH, 30, 0):
        broker.ack_many(got)
    broker.close()


def cpu(ports: list[int]) -> list[float]:
    """Each server's CPU seconds so far."""
    out = []
    for port in ports:
        with redis.Redis(port=port) as r:
            info = r.info("cpu")
        out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return out


def run_workers(
    url: str, ports: list[int], queues: list[str], tasks: int, replicas: int
) -> dict[str, float]:
    """`replicas` `soloist worker --burst` processes on every queue, draining `tasks` tasks
    whose results are stored: tasks/s, and worker and Redis CPU per task."""
    app = make_app(url, url)
    for k in range(tasks):
        app.tasks["suite.noop_result"].apply_async(queue=queues[k % len(queues)])
    app.close()
    env = {**os.environ, "SOLOIST_BROKER_URL": url, "SOLOIST_RESULT_URL": url}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent)])
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "suite_app:app"]
    cmd += ["-Q", ",".join(queues), "--burst", "-l", "error"]
    before, server = resource.getrusage(resource.RUSAGE_CHILDREN), cpu(ports)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env) for _ in range(replicas)]
    assert all(p.wait(timeout=600) == 0 for p in procs)
    took = time.perf_counter() - t0
    after, server = resource.getrusage(resource.RUSAGE_CHILDREN), sum(
        b - a for a, b in zip(server, cpu(ports), strict=True)
    )
    worker = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "worker tasks/s": tasks / took,
        "worker us/task": worker / tasks * 1e6,
        "redis us/task": server / tasks * 1e6,
    }


def measure(
    url: str, ports: list[int], queues: int, procs: int, n: int, tasks: int
) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    url = f"{url}?prefix={prefix}"
    names = [f"bench-{q}" for q in range(queues)]
    broker = from_url(url)
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(SINGLE):
        broker.publish(f"single-{k % queues}", BODY)
    single = SINGLE / (time.perf_counter() - t0)
    client = (time.process_time() - c0) / SINGLE * 1e6
    t0 = time.perf_counter()
    for name in names:
        for start in range(0, n, 1000):
            broker.publish_many([(name, BODY, 0, 0)] * min(1000, n - start))
    published = queues * n / (time.perf_counter() - t0)
    start = multiprocessing.Event()
    workers = [
        multiprocessing.Process(target=consume, args=(url, names[p:] + names[:p], start))
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    time.sleep(1)  # all connected and waiting
    before = cpu(ports)
    t0 = time.perf_counter()
    start.set()
    for w in workers:
        w.join()
    took = time.perf_counter() - t0
    used = [b - a for a, b in zip(before, cpu(ports), strict=True)]
    left = sum(broker.depth(name) for name in names)
    broker.close()
    assert left == 0, f"{left} messages left"
    total = queues * n
    return {
        **run_workers(url, ports, names, tasks, procs),
        "publish 1/s": single,
        "client us/publish": client,
        "publish_many/s": published,
        "consume/s": total / took,
        "cpu us/msg": sum(used) / total * 1e6,
        "busiest us/msg": max(used) / total * 1e6,
    }


def on_server(tmp: Path, queues: int, procs: int, n: int, tasks: int) -> dict[str, float]:
    server = RedisServer(tmp, "--appendonly", "no")
    server.start()
    try:
        url = server.url.rsplit("/", 1)[0] + "/0"
        return measure(url, [server.port], queues, procs, n, tasks)
    finally:
        server.stop()


def on_cluster(masters: int) -> Callable[[Path, int, int, int, int], dict[str, float]]:
    def run(tmp: Path, queues: int, procs: int, n: int, tasks: int) -> dict[str, float]:
        cluster = RedisCluster(tmp, masters)
        cluster.start()
        try:
            return measure(cluster.url(), cluster.ports, queues, procs, n, tasks)
        finally:
            cluster.stop()

    return run


SETUPS = {
    "one server (redis://)": on_server,
    "cluster, 1 shard": on_cluster(1),
    "cluster, 3 shards": on_cluster(3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=12)
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("-n", type=int, default=1000, help="messages per queue")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=3000, help="for the worker processes")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in SETUPS}
    for r in range(args.rounds):
        for name, setup in SETUPS.items():
            with tempfile.TemporaryDirectory(prefix="soloist-cluster-bench-") as tmp:
                rows[name].append(setup(Path(tmp), args.queues, args.procs, args.n, args.tasks))
            print(f"round {r + 1}: {name}: {rows[name][-1]}", file=sys.stderr)
    print(
        f"{args.queues} queues x {args.n} messages, {args.procs} consumer processes "
        f"(fetch {BATCH} + ack_many), {args.rounds} rounds: median [range]"
    )
    keys = [
        "publish 1/s",
        "client us/publish",
        "publish_many/s",
        "consume/s",
        "cpu us/msg",
        "busiest us/msg",
        "worker tasks/s",
        "worker us/task",
        "redis us/task",
    ]
    print(f"{'':24}" + "".join(f"{k:>20}" for k in keys))
    for name, results in rows.items():
        cells = []
        for k in keys:
            values = sorted(x[k] for x in results)
            cells.append(f"{values[len(values) // 2]:.0f} [{values[0]:.0f}-{values[-1]:.0f}]")
        print(f"{name:24}" + "".join(f"{c:>20}" for c in cells))
    one, three = rows["cluster, 1 shard"], rows["cluster, 3 shards"]
    for k in keys:
        ratios = sorted(b[k] / a[k] for a, b in zip(one, three, strict=True))
        print(f"3 shards / 1 shard, {k}: {ratios[len(ratios) // 2]:.2f} "
              f"[{ratios[0]:.2f}-{ratios[-1]:.2f}] (per round)")  # fmt: skip


if __name__ == "__main__":
    main()
