"""A worker's path from fetch's return to the task's first line, on cold caches, A/B.

    python benchmarks/start_path.py OLD_TREE NEW_TREE [--rounds 6] [--tasks 300]
    python benchmarks/start_path.py OLD_TREE NEW_TREE --callgrind [--rounds 2] [--tasks 100]

Each TREE is a directory holding a `soloist` package (say `git archive <commit> soloist |
tar -x -C /tmp/old`). For each, in turn, `rounds` times: a process of its own runs one solo
worker on the memory broker at prefetch 1 over `tasks` no-op tasks; before each fetch it
copies 16 MB (so the caches and the TLB are cold, as after an idle worker's sleep on a
shared machine) and sleeps 2 ms. The path after the fetch is the same on every broker.

By default: the median thread CPU time of the path, and each tree's ratio to the first
(about 55 µs here, 8-10 µs warm; noisy to about 10%: run both orders, several times).
With `--callgrind` (valgrind, gcc and valgrind's headers): the path's instructions and
simulated cache misses per task, counted only between the fetch's return and the task's
first line (CALLGRIND_TOGGLE_COLLECT from a small C library, called through ctypes),
with the caches this machine kind has (L1 32 KB code, 48 KB data; 4 MB per core below).
The last-level misses (ILmr, DLmr, DLmw) are what a cold wake-up pays for; they repeat to
within a few percent. `--keep DIR` keeps callgrind's outputs (one per thread, the
main thread's ending in -01), for `callgrind_annotate`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVICT = 16 << 20  # bytes copied before each fetch: past the 2-4 MB L2 caches of this kind
TOGGLE_C = "#include <valgrind/callgrind.h>\nvoid toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n"
CACHES = ["--I1=32768,8,64", "--D1=49152,12,64", "--LL=4194304,16,64"]


def one_run(tasks: int, toggle: Callable[[], object] | None) -> float:
    """The median CPU µs of the path in this process (the tree on PYTHONPATH); with
    `toggle`, callgrind's collection is switched on at each fetch's return and off at the
    task's first line instead (the first 5 tasks uncounted, as in the timing)."""
    from soloist import App
    from soloist.worker.loop import Worker

    app = App("memory://", default_queue="q")
    fetched: list[int] = []
    started: list[int] = []

    @app.task(name="mark", ignore_result=True)
    def mark(n: int) -> None:
        if toggle is not None and n >= 5:
            toggle()
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
            if toggle is not None and len(fetched) > 5:
                toggle()
        return got

    broker.fetch = cold_fetch  # type: ignore[method-assign]
    Worker(app, ["q"], prefetch=1, burst=True).run()
    return statistics.median((s - f) / 1000 for f, s in zip(fetched[5:], started[5:], strict=True))


def counted(tree: str, tasks: int, tmp: Path, out: Path) -> dict[str, float]:
    """callgrind's events per task on `tree`'s path (its output written to `out`)."""
    cmd = ["valgrind", "--tool=callgrind", "--cache-sim=yes", *CACHES, "--collect-atstart=no"]
    cmd += ["--separate-threads=yes"]  # the main thread's counts alone, not the keeper's
    cmd += [f"--callgrind-out-file={out}", sys.executable, __file__, "--one", "--tasks"]
    cmd += [str(tasks), "--toggle", str(tmp / "toggle.so"), tree]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONHASHSEED="0")
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    lines = Path(f"{out}-01").read_text().splitlines()  # thread 1: the main thread
    events = next(line for line in lines if line.startswith("events:")).split()[1:]
    totals = next(line for line in lines if line.startswith(("summary:", "totals:"))).split()[1:]
    return {e: int(t) / (tasks - 5) for e, t in zip(events, totals, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--keep", help="with --callgrind: a directory for callgrind's outputs")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--toggle", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        toggle = ctypes.CDLL(args.toggle).toggle if args.toggle else None
        print(json.dumps(one_run(args.tasks, toggle)))
        return
    if args.callgrind:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "toggle.c"
            source.write_text(TOGGLE_C)
            lib = Path(tmp) / "toggle.so"
            subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", lib, source], check=True)
            keep = Path(args.keep or tmp)
            keep.mkdir(parents=True, exist_ok=True)
            for n in range(args.rounds):
                for i, tree in enumerate(args.trees):
                    per = counted(tree, args.tasks, Path(tmp), keep / f"tree{i}.{n}.out")
                    last = per["ILmr"] + per["DLmr"] + per["DLmw"]
                    each = " ".join(f"{e} {v:.0f}" for e, v in per.items())
                    print(f"{tree}: last-level misses {last:.0f} ({each})")
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
