"""The tasks the workflow chaos run executes (benchmarks/workflow_chaos.py): chord members,
chord callbacks and chain steps, each writing its life to a ledger around a short sleep.

Broker, result store, queue and ledger come from the environment, set by the run.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from soloist import App

app = App(default_queue=os.environ.get("CHAOS_QUEUE", "default"))
_LEDGER = os.environ.get("CHAOS_LEDGER", "workflow-chaos-ledger.txt")
#: How many members each chord has.
MEMBERS = 10
#: How many two-step chains the chord of a nested workflow has.
NESTED_MEMBERS = 5


def _append(line: str) -> None:
    # One write of one short line on an O_APPEND descriptor: lines never interleave.
    fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _run(self: Any, kind: str, info: str) -> None:
    req = self.request
    _append(f"start {kind} {req.id} {os.getpid()} {time.time():.6f}")
    time.sleep(random.uniform(0, 0.01))
    _append(f"end {kind} {req.id} {os.getpid()} {info}")


def expected_members(chord_no: int) -> list[int]:
    return [chord_no * 100 + i for i in range(MEMBERS)]


@app.task(name="wf.member", bind=True, max_retries=0)
def member(self: Any, chord_no: int, index: int) -> int:
    _run(self, "member", str(chord_no))
    return chord_no * 100 + index


@app.task(name="wf.collect", bind=True, max_retries=0)
def collect(self: Any, values: list[int], chord_no: int) -> int:
    """The chord callback: the ledger says whether it got the right values, in order."""
    right = values == expected_members(chord_no)
    _run(self, "callback", f"{chord_no} {'right' if right else 'wrong'}")
    return sum(values)


@app.task(name="wf.gather", bind=True, max_retries=0)
def gather(self: Any, values: list[int], nested_no: int) -> int:
    """The callback of a nested workflow's chord, whose members are chains of two steps."""
    right = values == [2] * NESTED_MEMBERS
    _run(self, "callback", f"{nested_no} {'right' if right else 'wrong'}")
    return sum(values)


@app.task(name="wf.step", bind=True, max_retries=0)
def step(self: Any, value: int, chain_no: int) -> int:
    _run(self, "step", str(chain_no))
    return value + 1


@app.hooks.on("task_succeeded")
def _acked(event: str, **info: Any) -> None:
    """Once the message is acked: a later run of the same task cannot be a redelivery."""
    _append(f"acked {info['outcome'].task_id} {os.getpid()}")
