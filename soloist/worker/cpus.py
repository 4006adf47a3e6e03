"""A host-wide CPU budget: tasks that declare `cpus=K` start only when K of N are free.

`soloist worker --cpus N` gives the worker a budget of N CPUs, shared by every Soloist
worker process on the host (replicas and separately started workers alike): the budget is
N lock files in a runtime directory, and a CPU is held by holding an exclusive `flock` on
one of them. The kernel drops a lock when its holder dies, however it dies (a SIGKILL
too), so a dead holder's CPUs always come back, with no clean-up and no daemon.

A task declaring `cpus=K` waits until it holds K locks; a task declaring none takes none.
A process the task forks inherits the locks (they are not passed on through `exec`), so
CPUs held by a task's leftover processes come back when those end.
A task asking for more than N gets all N. The locks are taken all at once or not at all
(whatever was taken is let go before waiting again), so two tasks that each hold part of
what they need never block each other; the price is that a task wanting many CPUs may wait
longer than one wanting few while the budget is busy. Every worker sharing a budget should
be given the same N.

The directory is `$SOLOIST_RUNTIME_DIR/cpus`, else `$XDG_RUNTIME_DIR/soloist/cpus`, else
`/tmp/soloist-UID/cpus`: workers that should share a budget must see the same one.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
import time
from collections.abc import Callable

#: How long a waiting task sleeps between two tries, jittered so waiters do not move in step.
POLL = 0.02


def runtime_dir() -> str:
    """Where Soloist keeps what the workers of this host share."""
    explicit = os.environ.get("SOLOIST_RUNTIME_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "soloist")
    return os.path.join(tempfile.gettempdir(), f"soloist-{os.getuid()}")


class Grant:
    """CPUs held by one task run: the locks, until `release`."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.cpus = len(fds)

    def release(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)  # closing drops the lock


class CpuBudget:
    """N CPUs shared through lock files in `directory` (see the module's docstring)."""

    def __init__(
        self,
        cpus: int,
        directory: str | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        if cpus < 1:
            raise ValueError(f"a CPU budget needs at least 1 CPU, not {cpus}")
        self.cpus = cpus
        self.directory = directory or os.path.join(runtime_dir(), "cpus")
        #: Asked while waiting: once true, the wait ends without a grant.
        self.stopping = stopping
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._paths = [os.path.join(self.directory, f"cpu-{i}.lock") for i in range(cpus)]

    def __getstate__(self) -> dict[str, object]:
        # A processes-pool child gets its own copy; the worker's `stopping` stays behind.
        return {**self.__dict__, "stopping": None}

    def try_acquire(self, want: int) -> Grant | None:
        """`want` CPUs (at most N) now, or None without holding any."""
        want = min(want, self.cpus)
        held: list[int] = []
        for path in random.sample(self._paths, len(self._paths)):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append(fd)
            if len(held) == want:
                return Grant(held)
        for fd in held:
            os.close(fd)
        return None

    def acquire(self, want: int) -> Grant | None:
        """Wait until `want` CPUs (at most N) are free and take them; None if `stopping`
        became true first."""
        while True:
            grant = self.try_acquire(want)
            if grant is not None:
                return grant
            if self.stopping is not None and self.stopping():
                return None
            time.sleep(POLL * random.uniform(0.5, 1.5))

    def free(self) -> int:
        """How many CPUs of the budget no one holds right now."""
        count = 0
        for path in self._paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                count += 1
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        return count
