"""The supervisor: N independent worker processes (replicas), kept running.

`soloist worker --replicas N` runs this instead of a worker. Each replica is a whole
`python -m soloist worker …` with its own broker connection and any pool, in its own process
group, so a terminal's Ctrl-C reaches only the supervisor, which forwards it. What it does,
one log line per replica event:

* A replica that dies, or ends on a hard time limit, is restarted after a back-off that
  doubles with each quick failure (1 s, 2 s, 4 s … at most a minute) and starts over once a
  replica has lived a minute, so a crash loop does not spin.
* A replica that exits `EXIT_RECYCLE` (it ran --max-tasks-per-child tasks or grew past
  --max-memory-per-child MB, and finished warm) is replaced at once.
* Any other exit while the fleet is meant to run is a failure, whatever its code: a
  task may call `os._exit(0)`, or someone may stop one replica, and the queue must not
  be stranded. Only with `burst=True` is a replica that exits 0 while the queues are
  empty done (as a `--burst` worker is: it does not wait for messages other replicas
  hold); the supervisor is done once no replica is left.
* The first SIGTERM/SIGINT goes on to every replica as SIGTERM, a warm shutdown, and the
  supervisor exits 0 once all have ended. A second is forwarded too: a cold shutdown.
  Only then, or when the autoscaler stops one, does a replica stay stopped.
* With `autoscale=(MIN, MAX)` it adds a replica while the queues hold more waiting messages
  than there are replicas, and stops one (warm) after the queues stayed empty a while.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from .worker.constants import (
    EXIT_COLD_SHUTDOWN,
    EXIT_CONFIG,
    EXIT_HARD_TIME_LIMIT,
    EXIT_OK,
    EXIT_RECYCLE,
)
from .worker.shutdown import SIGNALS

log = logging.getLogger("soloist.supervisor")

#: How often the supervisor looks at its replicas; bounds how late it sees an exit.
TICK = 0.2
#: Back-off before restarting a replica that failed: doubles per failure, up to the maximum.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
#: A replica that lived this long before failing starts the back-off over.
STABLE_AFTER = 60.0
#: Autoscaling: look at queue depth this often, one replica more or less per look; stop one
#: only after the queues stayed empty this long, so a pause between bursts does not flap.
SCALE_INTERVAL = 1.0
SCALE_DOWN_IDLE = 5.0

_REASONS = {
    EXIT_CONFIG: "configuration or broker error",
    EXIT_COLD_SHUTDOWN: "cold shutdown",
    EXIT_HARD_TIME_LIMIT: "hard time limit",
}


def _replica_setup() -> None:
    """In each replica before it starts: its own process group, and (on Linux) a SIGTERM,
    so a warm shutdown, from the kernel should the supervisor die."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Replica:
    number: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic
    failures: int = 0
    restart_at: float = 0.0  # monotonic; when proc is None
    retiring: bool = False  # told to stop by the autoscaler


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        replicas: int,
        *,
        autoscale: tuple[int, int] | None = None,
        depth: Callable[[], int] | None = None,
        burst: bool = False,
    ) -> None:
        self.command = list(command)
        self.initial = replicas
        self.autoscale = autoscale
        self.depth = depth
        self.burst = burst
        self.replicas: list[Replica] = []
        self._signals = self._forwarded = 0
        self._numbers = 0
        self._next_scale = 0.0
        self._idle_since: float | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            for _ in range(self.initial):
                self._add()
            while self.replicas:
                self._tick(time.monotonic())
                time.sleep(TICK)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return EXIT_COLD_SHUTDOWN if self._signals > 1 else EXIT_OK

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1  # acted on in the loop, not inside the handler

    def _tick(self, now: float) -> None:
        if self._forwarded < self._signals:
            self._forward()
        for replica in list(self.replicas):
            if replica.proc is None:
                if now >= replica.restart_at:
                    self._start(replica)
            elif (code := replica.proc.poll()) is not None:
                self._exited(replica, code, now)
        if self.autoscale is not None and not self._signals:
            self._scale(now)

    def _forward(self) -> None:
        self._forwarded = self._signals
        kind = "warm" if self._signals == 1 else "cold"
        self.replicas = [r for r in self.replicas if r.proc is not None]  # no more restarts
        log.warning("shutting down %d replicas (%s)", len(self.replicas), kind)
        for replica in self.replicas:
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGTERM)

    def _add(self) -> None:
        self._numbers += 1
        replica = Replica(self._numbers)
        self.replicas.append(replica)
        self._start(replica)

    def _start(self, replica: Replica) -> None:
        replica.proc = subprocess.Popen(self.command, preexec_fn=_replica_setup)
        replica.started = time.monotonic()
        log.info("replica %d (pid %d) started", replica.number, replica.proc.pid)

    def _exited(self, replica: Replica, code: int, now: float) -> None:
        assert replica.proc is not None
        reason = f"killed by {signal.Signals(-code).name}" if code < 0 else _REASONS.get(code)
        what = f"replica {replica.number} (pid {replica.proc.pid}) exited with code {code}"
        what += f" ({reason})" if reason else ""
        replica.proc = None
        if code == EXIT_RECYCLE and not self._signals:
            log.info("replica %d recycled: %s", replica.number, what)
            self._start(replica)
        elif self._signals or replica.retiring or (code == EXIT_OK and self._drained()):
            log.info("%s", what)
            self.replicas.remove(replica)
        else:
            if now - replica.started >= STABLE_AFTER:
                replica.failures = 0
            replica.failures += 1
            delay = min(BACKOFF_FIRST * 2 ** (replica.failures - 1), BACKOFF_MAX)
            replica.restart_at = now + delay
            log.warning("%s; restarting in %.1fs", what, delay)

    def _drained(self) -> bool:
        """In burst mode, whether the queues are empty (then a replica exiting 0 is done)."""
        if not self.burst or self.depth is None:
            return False
        try:
            return self.depth() == 0
        except Exception as exc:
            log.warning("cannot read the queue depth (restarting the replica): %s", exc)
            return False

    def _scale(self, now: float) -> None:
        if now < self._next_scale or self.depth is None or self.autoscale is None:
            return
        self._next_scale = now + SCALE_INTERVAL
        try:
            depth = self.depth()
        except Exception as exc:
            log.warning("autoscale: cannot read the queue depth: %s", exc)
            return
        low, high = self.autoscale
        active = [r for r in self.replicas if not r.retiring]
        if depth:
            self._idle_since = None
            if depth > len(active) and len(active) < high:
                log.info("autoscale: %d waiting, %d replicas: adding one", depth, len(active))
                self._add()
        elif self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= SCALE_DOWN_IDLE and len(active) > low:
            self._idle_since = now
            replica = active[-1]
            replica.retiring = True
            log.info("autoscale: queues idle, stopping replica %d", replica.number)
            if replica.proc is None:
                self.replicas.remove(replica)  # waiting for a restart: just drop it
            else:
                replica.proc.send_signal(signal.SIGTERM)
