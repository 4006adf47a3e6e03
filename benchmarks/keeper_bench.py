"""Does the keeper cost anything on the hot path? No-op tasks/s with it on and off.

    python benchmarks/keeper_bench.py [--tasks N] [--rounds R]

Runs a solo worker in-process (burst mode) over N pre-filled no-op tasks, alternating
keeper on and off for R rounds each, on the memory and SQLite brokers, and prints the
median rate of each and their ratio. The keeper never touches the path between fetching
and running a task, so the ratio should be 1 within noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from soloist import App
from soloist.testing import drain


def rate(url: str, tasks: int, keeper: bool) -> float:
    app = App(url, url)

    @app.task(name="noop", ignore_result=True)
    def noop() -> None:
        return None

    for _ in range(tasks):
        noop.delay()
    t0 = time.perf_counter()
    stats = drain(app, prefetch=100, keeper=keeper)
    elapsed = time.perf_counter() - t0
    assert stats.done == tasks
    app.close()
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'broker':<8} {'keeper on':>12} {'keeper off':>12} {'on/off':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("memory", "sqlite"):
            on, off = [], []
            for i in range(args.rounds):
                url = "memory://" if name == "memory" else f"sqlite:///{tmp}/k{i}.db"
                on.append(rate(url, args.tasks, keeper=True))
                url = "memory://" if name == "memory" else f"sqlite:///{tmp}/k{i}-off.db"
                off.append(rate(url, args.tasks, keeper=False))
            m_on, m_off = statistics.median(on), statistics.median(off)
            print(f"{name:<8} {m_on:>10,.0f}/s {m_off:>10,.0f}/s {m_on / m_off:>8.3f}")


if __name__ == "__main__":
    main()
