"""Equal concurrency, compared: two solo replicas, a processes pool of 2, a threads pool of 2.

    python benchmarks/pools_bench.py [--tasks 300] [--rate 50]

Each setup runs as real `soloist worker` processes on one fresh SQLite file and gets the same
three workloads: no-op, I/O-bound (sleep 10 ms) and CPU-bound (about 5 ms of pure Python).
For each: tasks/s over a backlog of --tasks tasks (first start to last start); the latency
from enqueue to start, p50 and p99, of tasks sent one at a time at --rate per second; and the
total resident memory of the setup's processes (supervisor, workers, children, watchdogs).
The floor is two bare processes doing the same broker and result-store operations in a
loop, without a worker. Machines are shared and noisy: read the ratios to the floor.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from soloist import App

app = App()


@app.task(name="noop")
def noop(enqueued: float) -> float:
    return time.time()


@app.task(name="io")
def io(enqueued: float) -> float:
    started = time.time()
    time.sleep(0.01)
    return started


@app.task(name="cpu")
def cpu(enqueued: float, rounds: int) -> float:
    started = time.time()
    sum(i * i for i in range(rounds))
    return started


SETUPS = {
    "floor: 2 bare loops": None,
    "--replicas 2 --pool solo": ["--replicas", "2", "--pool", "solo"],
    "--pool processes -c 2": ["--pool", "processes", "-c", "2"],
    "--pool threads -c 2": ["--pool", "threads", "-c", "2"],
}


def calibrate() -> int:
    """Rounds of the CPU task that take about 5 ms here."""
    rounds = 10_000
    t0 = time.perf_counter()
    sum(i * i for i in range(rounds))
    return int(rounds * 0.005 / (time.perf_counter() - t0))


def workloads(rounds: int) -> dict[str, tuple[str, tuple[Any, ...]]]:
    return {"no-op": ("noop", ()), "sleep 10 ms": ("io", ()), "cpu 5 ms": ("cpu", (rounds,))}


def bare_loop(url: str) -> None:
    """The floor: fetch, run the function, store the result, ack; nothing else."""
    from soloist.execution import TaskRunner
    from soloist.results.base import SUCCESS
    from soloist.results.record import success_record

    app.configure(url, url)
    runner = TaskRunner(app)
    while True:
        for delivery in app.broker.fetch(["default"], 1, 30, 0.5):
            message, task = runner.decode(delivery)  # type: ignore[misc]
            value = task.fn(*message.args, **message.kwargs)
            record = app.codec.dumps(success_record(value))
            app.results.put(message.id, SUCCESS, record, app.result_ttl)
            app.broker.ack(delivery)


def wait_all(ids: list[str], timeout: float = 120) -> list[float]:
    deadline = time.monotonic() + timeout
    values: list[float] = []
    for task_id in ids:
        values.append(app.result(task_id).get(timeout=max(deadline - time.monotonic(), 0.1)))
    return values


def rss_mb(root: int) -> float:
    """Resident memory of `root` and all its descendants, in MB."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(setup: list[str] | None, url: str, n: int, rate: float, rounds: int) -> list[Any]:
    env = {**os.environ, "SOLOIST_BROKER_URL": url, "SOLOIST_RESULT_URL": url}
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    procs: list[Any] = []
    if setup is None:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=bare_loop, args=(url,), daemon=True) for _ in range(2)]
        for p in procs:
            p.start()
        root = 0
    else:
        cmd = [sys.executable, "-m", "soloist", "worker", "-A", "pools_bench:app", "-l", "error"]
        procs = [subprocess.Popen([*cmd, *setup], env=env, cwd=here)]
        root = procs[0].pid
    rows = []
    try:
        wait_all([noop.delay(time.time()).id])  # up and running
        for name, (task, args) in workloads(rounds).items():
            send = app.tasks[task].delay
            ids = [send(time.time(), *args).id for _ in range(n)]
            starts = wait_all(ids)
            throughput = n / (max(starts) - min(starts))
            latencies = []
            for _ in range(int(rate * 2)):  # two seconds of single sends
                sent = time.time()
                latencies.append(wait_all([send(sent, *args).id])[0] - sent)
                time.sleep(max(1 / rate - (time.time() - sent), 0))
            cuts = statistics.quantiles(latencies, n=100)
            rows.append([name, throughput, cuts[49] * 1000, cuts[98] * 1000])
        # The floor's loops are children of this process: count them, not it.
        memory = sum(rss_mb(p.pid) for p in procs) if setup is None else rss_mb(root)
        for row in rows:
            row.append(memory)
    finally:
        for p in procs:
            p.terminate()
            p.wait() if isinstance(p, subprocess.Popen) else p.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300, help="backlog per workload")
    parser.add_argument("--rate", type=float, default=50, help="single sends per second")
    args = parser.parse_args()
    rounds = calibrate()
    results: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, setup in SETUPS.items():
            url = f"sqlite:///{tmp}/{len(results)}.db"
            app.configure(url, url)
            t0 = time.monotonic()
            results[label] = measure(setup, url, args.tasks, args.rate, rounds)
            print(f"{label}: {time.monotonic() - t0:.0f}s", file=sys.stderr)
            app.close()
    floor = {row[0]: row[1] for row in results["floor: 2 bare loops"]}
    print(
        f"{'setup':<26} {'workload':<12} {'tasks/s':>8} {'x floor':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7}"
    )
    for label, rows in results.items():
        for name, throughput, p50, p99, memory in rows:
            print(
                f"{label:<26} {name:<12} {throughput:>8.0f} {throughput / floor[name]:>8.2f} "
                f"{p50:>7.1f} {p99:>7.1f} {memory:>7.0f}"
            )


if __name__ == "__main__":
    main()
