"""Hard time limits, enforced twice over.

At the limit the keeper thread asks the pool to stop just that task (the processes pool
kills its child, the threads pool abandons its thread); the pool then reports it failed with
`TimeLimitExceeded` and the worker settles it as usual. Where that is impossible (the solo
pool runs the task in the main thread) the keeper records the task as failed, dead-letters
its message, hands back whatever else the worker holds, and ends the process with
`EXIT_HARD_TIME_LIMIT`.

The keeper needs the GIL, and a C call that holds it (a catastrophic regex, a tight loop
in an extension) starves every Python thread. So a task with a hard limit also arms a
small watchdog *process*, which needs nothing from the worker: if the worker is still alive
`GRACE` seconds after the limit, the watchdog SIGKILLs it and records the failure and
settles the message itself, through its own broker connection. The parent then sees the
worker killed by SIGKILL rather than exiting with `EXIT_HARD_TIME_LIMIT`. It watches every
armed task of the worker, each with its own deadline.

The watchdog also guards the processes tasks start (see soloist.pools.tree): the keeper
starts it as soon as the worker has a child process; it notes the worker's descendants
every `SNAPSHOT_INTERVAL`, and once the worker is gone without saying it stops (SIGKILLed,
killed by the watchdog itself, or ended at a hard limit, which hands its task's processes
over) it ends them: SIGTERM, then SIGKILL after `CHILD_GRACE`.
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
import threading
import time
from typing import TYPE_CHECKING, Any

from ..app import App
from ..brokers.base import Delivery
from ..errors import TimeLimitExceeded
from ..execution import Kind, Outcome
from ..pools import tree
from ..results.base import FAILURE
from ..results.record import failure_record
from .constants import EXIT_HARD_TIME_LIMIT

if TYPE_CHECKING:
    from .loop import Running, Worker

log = logging.getLogger("soloist.keeper")


def _failure(app: App, limit: float) -> tuple[str, bytes]:
    reason = f"hard time limit of {limit}s exceeded"
    return reason, app.codec.dumps(failure_record(TimeLimitExceeded.__name__, reason, ""))


def record_hard_limit(app: App, delivery: Delivery, task_id: str, limit: float) -> None:
    """Store the time-limit failure for `task_id` and dead-letter its message."""
    reason, result = _failure(app, limit)
    app.results.put(task_id, FAILURE, result, app.result_ttl)
    app.broker.dead_letter(delivery, reason)


def hard_limit_outcome(app: App, running: Running) -> Outcome:
    """The same failure as an outcome, for the worker to settle."""
    reason, result = _failure(app, running.time_limit or 0)
    return Outcome(Kind.FAILURE, running.task_id, running.task, result, reason=reason)


class HardLimit:
    """The in-process enforcement, run from the keeper thread."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def enforce(self, running: Running) -> None:
        """Stop the task through the pool, or else end the process (and not return)."""
        w = self.worker
        if w.pool.stop(running.delivery, hard_limit_outcome(w.app, running)):
            running.stopped = True
            log.error(
                "task %s[%s] passed its hard time limit of %ss: stopped",
                running.task,
                running.task_id,
                running.time_limit,
            )
            return
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
            self._end_tree()
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(EXIT_HARD_TIME_LIMIT)

    def _end_tree(self) -> None:
        """What the task started ends with it: handed to the watchdog, which outlives this
        process and ends it (without the watchdog, this process waits out the grace)."""
        procs = tree.leftovers()
        keeper = self.worker.keeper
        if keeper is not None and keeper.watchdog is not None and procs:
            keeper.watchdog.adopt(procs)
        else:
            tree.end(procs, tree.CHILD_GRACE)


class Watchdog:
    """The worker's side of the watchdog process: started on first use, fed over a pipe."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # tasks start on pool threads, end on the main one

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._start()
            self._write(message)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def guard(self) -> None:
        """Start the watchdog now (if it is not running), to guard the processes tasks
        start against a SIGKILL of the worker."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                # Not `-m`: that would run this module a second time, as __main__.
                [sys.executable, "-c", "from soloist.worker.timelimit import watch; watch()"],
                stdin=subprocess.PIPE,
            )
            tree.add_helper(self._proc.pid)
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

    def _write(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        self._proc.stdin.flush()

    def arm(self, running: Running, grace: float) -> None:
        d = running.delivery
        self._send(
            {
                "key": d.id,
                # CLOCK_MONOTONIC: one clock for every process of the machine, which a
                # step of the wall clock does not move.
                "deadline": running.started + (running.time_limit or 0) + grace,
                "limit": running.time_limit,
                "task_id": running.task_id,
                "delivery": {
                    "id": d.id,
                    "queue": d.queue,
                    "body": base64.b64encode(d.body).decode(),
                    "delivery_count": d.delivery_count,
                    "retries": d.retries,
                    "receipt": d.receipt,
                },
            }
        )

    def adopt(self, procs: list[tree.Proc]) -> None:
        """The worker is about to exit: end these processes once it is gone."""
        self._send({"adopt": procs})

    def disarm(self, key: str) -> None:
        with self._lock:
            if self._proc is not None:
                self._write({"disarm": key})

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                assert self._proc.stdin is not None
                self._write({"close": True})  # an end of input without it: the worker died
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
                tree.remove_helper(self._proc.pid)
                self._proc = None


def watch() -> None:
    """The watchdog process: wait for deadlines, fed by the worker on stdin; note the
    worker's descendants, and end them if the worker goes without saying it stops."""
    fd = sys.stdin.buffer.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    buffer = b""
    init: dict[str, Any] | None = None
    armed: dict[str, dict[str, Any]] = {}
    worker_gone: int | None = None  # a pidfd: readable once the worker has exited
    snapshot: list[tree.Proc] = []
    adopted: list[tree.Proc] = []  # handed over by a worker about to exit
    closing = False  # the worker said it is stopping normally
    next_snapshot = 0.0
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if init is None:
                init = message
                worker_gone = _pidfd(init["pid"])
                if worker_gone is not None:
                    selector.register(worker_gone, selectors.EVENT_READ)
            elif "disarm" in message:
                armed.pop(message["disarm"], None)
            elif "close" in message:
                closing = True
            elif "adopt" in message:
                adopted = [(pid, started) for pid, started in message["adopt"]]
            else:
                armed[message["key"]] = message
        if init is not None and time.monotonic() >= next_snapshot:
            next_snapshot = time.monotonic() + tree.SNAPSHOT_INTERVAL
            found = tree.descendants(tree.children(init["pid"]), skip=[os.getpid()])
            if tree.start_time(init["pid"]) is not None:  # else they moved away meanwhile
                snapshot = found
        first = min((a["deadline"] for a in armed.values()), default=None)
        timeout = tree.SNAPSHOT_INTERVAL if init is not None else None
        if first is not None:
            timeout = min(timeout or tree.SNAPSHOT_INTERVAL, max(first - time.monotonic(), 0))
        ready = {key.fd for key, _ in selector.select(timeout)}
        if fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                buffer += chunk
                continue  # read all the worker said (a last "adopt") before acting
            if not closing:
                _end_orphans(snapshot + adopted)  # the worker is exiting without a word
            return
        if worker_gone is not None and worker_gone in ready:
            _end_orphans(snapshot + adopted)  # the worker died with processes running
            return
        if init is not None and first is not None and first <= time.monotonic():
            now = time.monotonic()
            _kill_and_record(init, [a for a in armed.values() if a["deadline"] <= now])
            _end_orphans(snapshot + adopted)
            return


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when process `pid` exits (Linux 5.3+): the
    pipe from the worker may be held open by a child it forked."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _end_orphans(snapshot: list[tree.Proc]) -> None:
    """End what the dead worker left: the noted processes still alive (the same ones: pid
    and start time match), and whatever they started since."""
    alive = [p for p in snapshot if tree.start_time(p[0]) == p[1]]
    procs = tree.descendants([pid for pid, _ in alive], skip=[os.getpid()])
    if procs:
        sys.stderr.write(
            f"soloist watchdog: the worker is gone; ending the {len(procs)} process(es) "
            "its tasks left running\n"
        )
        tree.end(procs, tree.CHILD_GRACE)


def _kill_and_record(init: dict[str, Any], overdue: list[dict[str, Any]]) -> None:
    try:
        os.kill(init["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return  # the keeper got there first and the worker has exited
    limits = ", ".join(f"{a['limit']}s" for a in overdue)
    sys.stderr.write(
        f"soloist watchdog: worker {init['pid']} stuck past its hard time limit "
        f"of {limits} (GIL held); killed it\n"
    )
    if init["broker"].startswith("memory"):
        return  # another process's memory broker cannot be reached
    app = App(
        init["broker"],
        init["results"],
        serializer=init["serializer"],
        result_ttl=init["ttl"],
        accept_pickle=init["serializer"] == "pickle",
    )
    for armed in overdue:
        d = armed["delivery"]
        delivery = Delivery(
            d["id"],
            d["queue"],
            base64.b64decode(d["body"]),
            d["delivery_count"],
            d["retries"],
            d["receipt"],
        )
        record_hard_limit(app, delivery, armed["task_id"], armed["limit"])
    app.close()
