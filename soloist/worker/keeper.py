"""The keeper: one small thread that does a worker's bookkeeping while the task runs inline.

It never runs task code. Every tick it renews the leases of held deliveries, publishes the
worker's heartbeat, enforces hard time limits, and reads revocations (stopping a running
task revoked with terminate=True; see soloist.worker.revocation). Once the worker has a
child process it starts the watchdog, which guards the tasks' processes (see
soloist.pools.tree). When the main thread is stuck in C code that holds the GIL, this
thread cannot run either; the watchdog process covers that case.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from ..execution import Kind, Outcome
from ..limits import SLOT_LEASE, SLOT_RENEW
from ..pools import tree
from .constants import GRACE, HEARTBEAT_INTERVAL, HEARTBEAT_TTL, KEEPER_TICK
from .revocation import SYNC_INTERVAL, MainThreadStop
from .timelimit import HardLimit, Watchdog

if TYPE_CHECKING:
    from .loop import Running, Worker

log = logging.getLogger("soloist.keeper")


class Keeper(threading.Thread):
    def __init__(self, worker: Worker, watchdog: bool = True) -> None:
        super().__init__(name="soloist-keeper", daemon=True)
        self.worker = worker
        self.hard_limit = HardLimit(worker)
        self.watchdog = Watchdog(worker.app) if watchdog else None
        self.main_stop = MainThreadStop()
        self._halt = threading.Event()
        self._wake = threading.Event()  # set by stop and nudge
        self._resting = False  # idle: sleeping past KEEPER_TICK
        self._failing = False

    def start(self) -> None:
        """Called in the main thread (after `Worker.check` read the revocations): run."""
        self.main_stop.install()
        super().start()

    def arm(self, running: Running) -> None:
        """A task with a hard time limit started: tell the GIL-free watchdog too."""
        if self.watchdog is not None and running.time_limit:
            self.watchdog.arm(running, GRACE)

    def disarm(self, running: Running) -> None:
        if self.watchdog is not None and running.time_limit:
            self.watchdog.disarm(running.delivery.id)

    def nudge(self) -> None:
        """A task started: tick now if idle (`_pause`), else at the next tick as ever."""
        if self._resting:
            self._wake.set()

    def _pause(self, *due: float) -> float:
        """KEEPER_TICK while the worker holds or runs anything; while idle, until the next
        of `due` (revocation sync, heartbeat): an idle worker's keeper wakes twice a
        second, not ten times."""
        self._resting = True  # first: a task that starts after the check below nudges
        if self.worker.running or self.worker.held():
            self._resting = False
            return KEEPER_TICK
        return max(KEEPER_TICK, min(due) - time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=5)
        if self.watchdog is not None:
            self.watchdog.close()
        self.main_stop.uninstall()
        try:
            self.worker.broker.forget_worker(self.worker.id)
        except Exception:
            log.debug("could not drop the heartbeat of %s", self.worker.id, exc_info=True)

    def run(self) -> None:
        next_beat = next_extend = next_sync = next_slots = 0.0
        while True:
            self._wake.wait(self._pause(next_sync, next_beat))
            self._wake.clear()
            if self._halt.is_set():
                return
            now = time.monotonic()
            if self.watchdog is not None and not self.watchdog.running and tree.has_children():
                self.watchdog.guard()  # a task started a process: guard it against a SIGKILL
            for running in list(self.worker.running.values()):
                if (
                    running.time_limit
                    and not running.stopped
                    and now - running.started > running.time_limit
                ):
                    self.hard_limit.enforce(running)  # stops the task, or ends the process
                    self.disarm(running)
            try:
                if now >= next_extend:
                    next_extend = now + self.worker.lease / 3
                    self._extend()
                if now >= next_sync:
                    next_sync = now + SYNC_INTERVAL
                    self._revoke()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_INTERVAL
                    self.beat()
                if now >= next_slots:
                    next_slots = now + SLOT_RENEW
                    self._renew_slots()
                self.worker.settler.flush_overdue()
                if self._failing:
                    log.warning("keeper: broker reachable again")
                    self._failing = False
            except Exception as exc:
                if not self._failing:
                    log.warning("keeper: broker call failed (will keep trying): %s", exc)
                    self._failing = True
                next_extend = min(next_extend, now + 1.0)

    def _extend(self) -> None:
        held = self.worker.held()
        if not held:
            return
        stale = self.worker.broker.extend(held, self.worker.lease)  # those no longer held
        # An ack on its way (sent down the pipe, its reply unread) may have landed.
        still_held = {d.id for d in self.worker.held()} - self.worker.settler.acking()
        for delivery in stale:
            # Settled by the main thread meanwhile is fine; anything else lost its lease.
            if delivery.id in still_held:
                log.warning("keeper: lease of %s lost; another worker may run it", delivery.id)

    def _renew_slots(self) -> None:
        """Keep the concurrency slots of running tasks (soloist.limits) from lapsing."""
        slots = [r.slot for r in list(self.worker.running.values()) if r.slot is not None]
        if slots:
            self.worker.app.results.renew_slots(slots, SLOT_LEASE)

    def _revoke(self) -> None:
        revoked = self.worker.revoked
        revoked.sync()
        for running in list(self.worker.running.values()):
            r = revoked.get(running.task_id)
            # A task that started after its revocation should have been skipped (the set of
            # a child process, or of a task runner that raced this sync, was older): stop it.
            if r is None or running.stopped or not (r.terminate or running.since >= r.at):
                continue
            log.warning("task %s[%s] revoked: stopping it", running.task, running.task_id)
            outcome = Outcome(Kind.REVOKED, running.task_id, running.task, reason="revoked")
            if self.worker.pool.stop(running.delivery, outcome):
                running.stopped = True
            else:
                self.main_stop.stop(running.task_id)  # the solo pool: it runs in this process

    def beat(self) -> None:
        self.worker.broker.heartbeat(
            self.worker.id, json.dumps(self.status()).encode(), HEARTBEAT_TTL
        )

    def status(self) -> dict[str, object]:
        """What this worker tells `soloist status`: who it is and what it runs."""
        w = self.worker
        return {
            "id": w.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pool": w.pool.name,
            "concurrency": w.pool.concurrency,
            "queues": w.queues,
            "started": w.started_at,
            "done": w.stats.done,
            "failed": w.stats.failed,
            "running": [
                {"task": r.task, "id": r.task_id, "since": r.since}
                for r in list(w.running.values())
            ],
            # Leased deliveries per queue, for brokers that cannot count them (RabbitMQ).
            "held": dict(collections.Counter(d.queue for d in w.held())),
        }
