"""Oversubscription, measured: 4 replicas whose CPU-bound tasks each open a pool of 2,
with and without a host-wide CPU budget (`--cpus`).

    python benchmarks/cpus_bench.py [--tasks N] [--work N] [--cpus N] [--replicas N]

Each run enqueues N `crunch` tasks (cpus_app.py: `cpus=2`, a process pool of
the CPUs granted, a fixed amount of pure-CPU work split across it) on a fresh SQLite file
and runs `soloist worker --replicas R --burst` until the queue is empty: without a budget,
R tasks x 2 processes share the host's cores; with `--cpus` (default: the host's count),
only as many tasks run at once as fit. Prints throughput and the tasks' run times (p50,
p99, measured inside each task) side by side, and the ratio of each to the run without.
Keep it short on a shared machine: the defaults take about 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpus_app import app

ROOT = Path(__file__).resolve().parent.parent


def run(
    tmp: Path, tasks: int, work: int, replicas: int, cpus: int | None
) -> tuple[float, list[float]]:
    """Tasks/s and the tasks' run times of one `--replicas` run."""
    url = f"sqlite:///{tmp}/cpus-{cpus}.db"
    env = {
        **os.environ,
        "SOLOIST_BROKER_URL": url,
        "SOLOIST_RESULT_URL": url,
        "SOLOIST_RUNTIME_DIR": str(tmp / f"run-{cpus}"),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}",
    }
    app.configure(url, url)
    results = app.tasks["crunch"].map([work] * tasks).results
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "cpus_app:app"]
    cmd += ["--replicas", str(replicas), "--burst", "-l", "error"]
    cmd += ["--cpus", str(cpus)] if cpus else []
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True)
    elapsed = time.perf_counter() - t0
    times: list[float] = [r.get(timeout=10) for r in results]
    app.close()
    return tasks / elapsed, times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--work", type=int, default=2_000_000, help="loop steps per task")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            "no budget": run(Path(tmp), args.tasks, args.work, args.replicas, None),
            f"--cpus {args.cpus}": run(Path(tmp), args.tasks, args.work, args.replicas, args.cpus),
        }
    base_rate, base_times = rows["no budget"]
    print(f"{args.replicas} replicas, {args.tasks} tasks of 2 processes, {os.cpu_count()} cores")
    print(f"{'':<10} {'tasks/s':>8} {'ratio':>6} {'p50 run':>8} {'p99 run':>8} {'p99 ratio':>9}")
    for name, (rate, times) in rows.items():
        print(
            f"{name:<10} {rate:>8.2f} {rate / base_rate:>6.2f} {statistics.median(times):>7.2f}s "
            f"{p99(times):>7.2f}s {p99(times) / p99(base_times):>9.2f}"
        )


if __name__ == "__main__":
    main()
