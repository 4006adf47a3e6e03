"""Steps of the wall clock, for one process under test, without touching the machine's.

`install(directory)` writes a `sitecustomize.py` there; a Python process started with that
directory first on PYTHONPATH and SOLOIST_TEST_CLOCK_STEP naming a file reads its wall
clock (`time.time`, `time.time_ns`) that many seconds ahead (or behind, if negative) of the
real one, re-reading the file on every call, as after a step of the system clock. The
monotonic clock is left alone, as a real step leaves it. Child processes (the watchdog)
inherit it through the environment.

Why not libfaketime: with DONT_FAKE_MONOTONIC=1, which a step of the wall clock needs,
libfaketime 0.9.10 (Debian 12) makes Python's time.sleep fail with EINVAL (it rewrites
the absolute CLOCK_MONOTONIC deadline of clock_nanosleep).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_SITE = """\
import os
if os.environ.get("SOLOIST_TEST_CLOCK_STEP"):
    import tests.support.clock_step
    tests.support.clock_step.shift(os.environ["SOLOIST_TEST_CLOCK_STEP"])
"""


def install(directory: Path) -> None:
    (directory / "sitecustomize.py").write_text(_SITE)


def step(path: Path, seconds: float) -> None:
    """Set the process's wall clock `seconds` away from the real one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(seconds))
    os.replace(tmp, path)  # atomic: a reader never sees an empty file


def shift(path: str) -> None:
    """In the process under test: read the wall clock through the step file."""
    real_time, real_ns = time.time, time.time_ns

    def offset() -> float:
        try:
            with open(path) as f:
                return float(f.read())
        except (OSError, ValueError):
            return 0.0

    time.time = lambda: real_time() + offset()
    time.time_ns = lambda: real_ns() + int(offset() * 1e9)
