"""The task the chaos run executes: it writes its life to a ledger around a short sleep.

Broker, queue and ledger come from the environment, set by benchmarks/chaos.py.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from soloist import App

app = App(default_queue=os.environ.get("CHAOS_QUEUE", "default"))
_LEDGER = os.environ.get("CHAOS_LEDGER", "chaos-ledger.txt")


def _append(line: str) -> None:
    # One write of one short line on an O_APPEND descriptor: lines never interleave.
    fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _live(req: Any, ms: int) -> None:
    _append(f"start {req.id} {req.delivery_count} {os.getpid()} {time.time():.6f}")
    time.sleep(ms / 1000)
    _append(f"end {req.id} {os.getpid()} {time.time():.6f}")


@app.task(name="chaos.work", bind=True, ignore_result=True, max_retries=0)
def work(self: Any, ms: int) -> None:
    _live(self.request, ms)


@app.task(name="chaos.flaky", bind=True, max_retries=0)
def flaky(self: Any, ms: int) -> str:
    """Fails its first run (dead-lettered, for the operators to requeue), then runs as
    `work` does. The first run writes `failed`, not `start`: only reruns are counted."""
    req = self.request
    try:
        with open(_LEDGER) as f:
            failed_before = any(line.startswith(f"failed {req.id} ") for line in f)
    except FileNotFoundError:
        failed_before = False
    if not failed_before:
        _append(f"failed {req.id} {os.getpid()} {time.time():.6f}")
        raise RuntimeError("the first run of a flaky task")
    _live(req, ms)
    return str(req.id)


# Hostile tasks (benchmarks/chaos.py --hostile): each reaches past its task, then ends as
# `work` does, except `sys_exit`, which fails by design and is dead-lettered.
def _start(req: Any) -> None:
    _append(f"start {req.id} {req.delivery_count} {os.getpid()} {time.time():.6f}")


def _end(req: Any) -> None:
    _append(f"end {req.id} {os.getpid()} {time.time():.6f}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_late(signum: int, frame: FrameType | None) -> None:
    raise RuntimeError("SIGALRM from a timer an earlier task left armed")


@app.task(name="chaos.sys_exit", bind=True, ignore_result=True, max_retries=0)
def sys_exit(self: Any) -> None:
    _start(self.request)
    sys.exit(0)


@app.task(name="chaos.os_exit", bind=True, ignore_result=True, max_retries=0)
def os_exit(self: Any) -> None:
    """Ends its process, exit code 0, on its first delivery; runs on the next."""
    req = self.request
    if req.delivery_count == 1:
        _append(f"exit {req.id} {os.getpid()}")
        os._exit(0)
    _start(req)
    _end(req)


@app.task(name="chaos.fork", bind=True, ignore_result=True, max_retries=0)
def fork(self: Any) -> None:
    """Forks without exec; the child returns from the task into the worker."""
    req = self.request
    _start(req)
    pid = os.fork()
    if pid == 0:
        _append(f"child {req.id} {os.getpid()}")
        return
    os.waitpid(pid, 0)
    _end(req)


@app.task(name="chaos.alarm", bind=True, ignore_result=True, max_retries=0)
def alarm(self: Any) -> None:
    """Leaves a SIGALRM timer armed (with a raising handler where it can set one)."""
    _start(self.request)
    if _main_thread():
        signal.signal(signal.SIGALRM, _raise_late)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    _end(self.request)


@app.task(name="chaos.signals", bind=True, ignore_result=True, max_retries=0)
def takes_signals(self: Any) -> None:
    """Ignores SIGTERM and SIGINT from now on (where it can: the main thread)."""
    _start(self.request)
    if _main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end(self.request)


@app.task(name="chaos.kill_threads", bind=True, ignore_result=True, max_retries=0)
def kill_threads(self: Any) -> None:
    """Raises SystemExit in the idle task threads of its pool: each dies as it takes its
    next delivery, which must be given back."""
    _start(self.request)
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or 0)
        if thread.name == "soloist-task" and frame is not None and frame.f_code.co_name == "_serve":
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread.ident or 0), ctypes.py_object(SystemExit)
            )
    _end(self.request)


#: What `chaos.py --hostile` publishes besides `work`, by pool (threads cannot take signals).
HOSTILE = [sys_exit, os_exit, fork, alarm, takes_signals]
HOSTILE_THREADS = [*HOSTILE, kill_threads]


@app.task(name="chaos.pid", bind=True, max_retries=0)
def pid(self: Any, ms: int) -> int:
    """As `work`, and its result is the pid that ran it (whose result was kept)."""
    _live(self.request, ms)
    return os.getpid()
