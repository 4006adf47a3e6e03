"""Hard time limits, enforced twice over.

At the limit the keeper thread records the task as failed, dead-letters its message, hands
back whatever else the worker holds, and ends the process with `EXIT_HARD_TIME_LIMIT`.

The keeper needs the GIL, and a C call that holds it (a catastrophic regex, a tight loop
in an extension) starves every Python thread. So a task with a hard limit also arms a
small watchdog *process*, which needs nothing from the worker: if the worker is still alive
`GRACE` seconds after the limit, the watchdog SIGKILLs it and records the failure and
settles the message itself, through its own broker connection. The parent then sees the
worker killed by SIGKILL rather than exiting with `EXIT_HARD_TIME_LIMIT`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from ..brokers.base import Delivery
from ..errors import TimeLimitExceeded
from ..results.base import FAILURE
from ..results.handle import failure_record
from . import constants as c

if TYPE_CHECKING:
    from ..app import App
    from .loop import Running, Worker

log = logging.getLogger("soloist.keeper")


def record_hard_limit(app: App, delivery: Delivery, task_id: str, limit: float) -> None:
    """Store the time-limit failure for `task_id` and dead-letter its message."""
    reason = f"hard time limit of {limit}s exceeded"
    record = failure_record(TimeLimitExceeded.__name__, reason, "")
    app.results.put(task_id, FAILURE, app.codec.dumps(record), app.result_ttl)
    app.broker.dead_letter(delivery, reason)


class HardLimit:
    """The in-process enforcement, run from the keeper thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def enforce(self, running: Running) -> None:
        w = self.worker
        log.error(
            "task %s[%s] passed its hard time limit of %ss: recording the failure and "
            "ending this worker",
            running.task,
            running.task_id,
            running.time_limit,
        )
        try:
            record_hard_limit(w.app, running.delivery, running.task_id, running.time_limit or 0)
            others = [d for d in w.held() if d.id != running.delivery.id]
            w.broker.release(others)
            w.broker.forget_worker(w.id)
        except Exception:
            log.exception("could not record the hard time limit; the lease will lapse instead")
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(c.EXIT_HARD_TIME_LIMIT)


class Watchdog:
    """The worker's side of the watchdog process: started on first use, fed over a pipe."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._proc: subprocess.Popen[bytes] | None = None

    def _send(self, message: dict[str, Any]) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "soloist.worker.timelimit"], stdin=subprocess.PIPE
            )
            app = self.app
            # URLs go through the pipe, never argv: `ps` would show their passwords.
            self._write(
                {
                    "pid": os.getpid(),
                    "broker": app.broker.url,
                    "results": app.results.url,
                    "serializer": app.codec.serializer.name,
                    "ttl": app.result_ttl,
                }
            )
        self._write(message)

    def _write(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        self._proc.stdin.flush()

    def arm(self, running: Running, grace: float) -> None:
        d = running.delivery
        self._send(
            {
                "deadline": running.since + (running.time_limit or 0) + grace,
                "limit": running.time_limit,
                "task_id": running.task_id,
                "delivery": {
                    "id": d.id,
                    "queue": d.queue,
                    "body": base64.b64encode(d.body).decode(),
                    "delivery_count": d.delivery_count,
                    "attempts": d.attempts,
                    "receipt": d.receipt,
                },
            }
        )

    def disarm(self) -> None:
        if self._proc is not None:
            self._write({"disarm": True})

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
            self._proc = None


def _watch() -> None:
    fd = sys.stdin.buffer.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    buffer = b""
    init: dict[str, Any] | None = None
    armed: dict[str, Any] | None = None
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if init is None:
                init = message
            else:
                armed = None if message.get("disarm") else message
        timeout = None if armed is None else max(armed["deadline"] - time.time(), 0)
        if selector.select(timeout):
            chunk = os.read(fd, 65536)
            if not chunk:
                return  # the worker closed the pipe: it exited
            buffer += chunk
        elif init is not None and armed is not None:
            _kill_and_record(init, armed)
            return


def _kill_and_record(init: dict[str, Any], armed: dict[str, Any]) -> None:
    from ..app import App

    try:
        os.kill(init["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return  # the keeper got there first and the worker has exited
    sys.stderr.write(
        f"soloist watchdog: worker {init['pid']} stuck past its hard time limit "
        f"of {armed['limit']}s (GIL held); killed it\n"
    )
    if init["broker"].startswith("memory"):
        return  # another process's memory broker cannot be reached
    d = armed["delivery"]
    delivery = Delivery(
        d["id"],
        d["queue"],
        base64.b64decode(d["body"]),
        d["delivery_count"],
        d["attempts"],
        d["receipt"],
    )
    app = App(
        init["broker"],
        init["results"],
        serializer=init["serializer"],
        result_ttl=init["ttl"],
        accept_pickle=init["serializer"] == "pickle",
    )
    record_hard_limit(app, delivery, armed["task_id"], armed["limit"])
    app.close()


if __name__ == "__main__":
    _watch()
