"""A worker's CPU from fetch's return to the task's first line, on cold caches, A/B.

    python benchmarks/start_path.py OLD_TREE NEW_TREE [--rounds 6] [--tasks 300]

Each TREE is a directory holding a `soloist` package (say `git archive <commit> soloist |
tar -x -C /tmp/old`). For each, in turn, `rounds` times: a process of its own runs one solo
worker on the memory broker at prefetch 1 over `tasks` no-op tasks; before each fetch it
copies 16 MB (so the caches and the TLB are cold, as after an idle worker's sleep on a
shared machine) and sleeps 2 ms. Prints the median thread CPU time from the fetch's return
to the task's first line, and each tree's ratio to the first. The path after the fetch is
the same on every broker. About 5-10 µs of it warm; 50-70 µs cold, which is what an idle
Redis worker's wake-up pays. Noisy to about 10%: run both orders, several times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

EVICT = 16 << 20  # bytes copied before each fetch: past the 2-4 MB L2 caches of this kind


def one_run(tasks: int) -> float:
    """The median CPU µs of the path in this process (the tree on PYTHONPATH)."""
    from soloist import App
    from soloist.worker.loop import Worker

    app = App("memory://", default_queue="q")
    fetched: list[int] = []
    started: list[int] = []

    @app.task(name="mark", ignore_result=True)
    def mark(n: int) -> None:
        started.append(time.thread_time_ns())

    mark.starmap([(i,) for i in range(tasks)])
    broker, big = app.broker, bytearray(EVICT)
    fetch = broker.fetch

    def cold_fetch(*args: Any, **kwargs: Any) -> Any:
        bytes(big)
        time.sleep(0.002)
        got = fetch(*args, **kwargs)
        if got:
            fetched.append(time.thread_time_ns())
        return got

    broker.fetch = cold_fetch  # type: ignore[method-assign]
    Worker(app, ["q"], prefetch=1, burst=True).run()
    return statistics.median((s - f) / 1000 for f, s in zip(fetched[5:], started[5:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.tasks)))
        return
    runs: dict[str, list[float]] = {tree: [] for tree in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONHASHSEED="0")
            cmd = [sys.executable, __file__, "--one", "--tasks", str(args.tasks), tree]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[tree].append(json.loads(out.stdout.splitlines()[-1]))
    first = statistics.median(runs[args.trees[0]])
    for tree, cpu in runs.items():
        each = " ".join(f"{c:.1f}" for c in cpu)
        median = statistics.median(cpu)
        print(f"{tree}: {median:.1f} µs CPU ({each}), ratio {median / first:.2f}")


if __name__ == "__main__":
    main()
