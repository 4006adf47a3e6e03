"""Tasks that reach past their task: `soloist worker -A tests.support.misbehaving:app`.

They exit, raise what is not an Exception, raise exceptions that cannot be printed, return
values that cannot be pickled, replace the worker's signal handlers, leave timers armed,
fork and return in the child, and kill sibling threads. The app pickles results, so a
return value's `__reduce__` is called. Ledger lines go to SOLOIST_TEST_LEDGER.
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
from tests.support.sample_app import ledger

app = App(serializer="pickle", accept_pickle=True)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class NotAnException(BaseException):
    pass


class Unpicklable:
    def __reduce__(self) -> Any:
        raise RuntimeError("no pickle")


RAISES: dict[str, Any] = {
    "exit0": lambda: sys.exit(0),
    "exit3": lambda: sys.exit(3),
    "interrupt": lambda: (_ for _ in ()).throw(KeyboardInterrupt),
    "generator-exit": lambda: (_ for _ in ()).throw(GeneratorExit),
    "base": lambda: (_ for _ in ()).throw(NotAnException("not an Exception")),
    "unprintable": lambda: (_ for _ in ()).throw(Unprintable()),
}


@app.task(name="raises", max_retries=0)
def raises(kind: str) -> None:
    RAISES[kind]()


@app.task(name="unpicklable")
def unpicklable() -> Unpicklable:
    return Unpicklable()


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="nap", bind=True)
def nap(self: Any, seconds: float, tag: str) -> str:
    """Sleeps in short steps (a stray SIGALRM lands in it), recording its delivery count."""
    ledger(f"start {tag} {os.getpid()} {self.request.delivery_count}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return tag


@app.task(name="os_exit", bind=True)
def os_exit(self: Any, code: int) -> str:
    """Ends its process on its first delivery, as a task calling os._exit does."""
    ledger(f"start os_exit {os.getpid()} {self.request.delivery_count}")
    if self.request.delivery_count == 1:
        os._exit(code)
    return "survived"


def _raise_stray(signum: int, frame: FrameType | None) -> None:
    raise RuntimeError("a timer left armed by an earlier task went off")


@app.task(name="takes_signals")
def takes_signals() -> str:
    """Installs handlers of its own for the worker's shutdown signals, and keeps them."""
    signal.signal(signal.SIGTERM, lambda signum, frame: ledger("task's SIGTERM handler"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return "took"


@app.task(name="arms_alarm")
def arms_alarm(own_handler: bool) -> str:
    """Leaves a SIGALRM timer armed, with a handler of its own or none."""
    if own_handler:
        signal.signal(signal.SIGALRM, _raise_stray)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    return "armed"


@app.task(name="forks")
def forks(child_exit: int | None = None) -> str:
    """Forks without exec; the child returns from the task as if it were the parent, or
    ends itself with sys.exit(child_exit)."""
    pid = os.fork()
    if pid == 0:
        ledger(f"child {os.getpid()}")
        if child_exit is not None:
            sys.exit(child_exit)
        return "child"
    _, status = os.waitpid(pid, 0)
    ledger(f"child exited {os.waitstatus_to_exitcode(status)}")
    return "parent"


@app.task(name="kill_siblings")
def kill_siblings() -> int:
    """Raises SystemExit in every other task thread: each dies on its next delivery."""
    me = threading.get_ident()
    victims = [t.ident for t in threading.enumerate() if t.name == "soloist-task" and t.ident != me]
    for ident in victims:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(ident or 0), ctypes.py_object(SystemExit)
        )
    ledger(f"killed {len(victims)}")
    return len(victims)


@app.task(name="hooked")
def hooked() -> str:
    return "ran"


# SOLOIST_HOOK_EXIT=1: a task_started hook that raises SystemExit for the task "hooked".
if os.environ.get("SOLOIST_HOOK_EXIT"):

    @app.hooks.on("task_started")
    def _exit_from_hook(event: str, **info: Any) -> None:
        if info["task"].name == "hooked":
            sys.exit("from a hook")
