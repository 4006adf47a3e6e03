"""A task's process tree: finding the processes a task started, and ending them.

A task may start processes (a `ProcessPoolExecutor`, a `multiprocessing.Pool`, a
subprocess), and those may start more. They are the task's: when the task ends, however it
ends, they end too, with SIGTERM and, `CHILD_GRACE` seconds later, SIGKILL.

How they are found (Linux): the process that runs tasks makes itself a *child subreaper*
(`PR_SET_CHILD_SUBREAPER`), so a process whose parent dies is re-parented to it instead of
to PID 1, and the whole tree stays reachable from it through `/proc/PID/task/TID/children`
(whichever session or process group its members moved to: `setsid` does not leave the
tree). Process groups were not enough (anything can leave one), `PR_SET_PDEATHSIG` covers
only direct children, and cgroups need privileges a worker seldom has. When the worker
itself is SIGKILLed, nothing in it runs: the watchdog process (see `timelimit`) keeps a
snapshot of the worker's descendants and ends them once the worker is gone
(soloist.worker.timelimit).

What cannot be reached: a process that was handed to another parent outside the tree
(`systemd-run`, a container runtime, `at`), and, after a SIGKILL of the worker, a process
started in the last `SNAPSHOT_INTERVAL` by a parent that then died too.

Elsewhere than Linux there is no `/proc` to walk: every function here finds nothing, and
only the processes pool's process-group kill applies.

Checking after each task is cheap: pools call `left_anything` (one read of a /proc file kept
open, half a microsecond), and only when the thread that ran the task has a child is the
tree walked.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("soloist.worker")

#: A process as found: its pid and its start time (in clock ticks since boot), so a pid
#: reused by an unrelated process after ours ended is never signalled.
Proc = tuple[int, int]

_LINUX = sys.platform.startswith("linux")
_PR_SET_CHILD_SUBREAPER = 36
#: How often the ending loop looks whether the processes it signalled are gone.
_POLL = 0.02
#: What a task's leftover processes get between SIGTERM and SIGKILL: time for a pool's
#: workers to exit cleanly, short enough not to hold a worker long.
CHILD_GRACE = 3.0
#: How often the watchdog notes the worker's descendants, to end them should the worker be
#: SIGKILLed: a process started and orphaned within this window of a SIGKILL escapes.
SNAPSHOT_INTERVAL = 0.5
#: Whether this process's tasks own its children (`claim`): a worker embedded in another
#: program (`soloist.testing.drain`) must not end that program's own children.
_claimed = False
#: Pids of this process's own helpers (the watchdog): not a task's, never ended by it.
_helpers: set[int] = set()


def claim() -> bool:
    """This process runs tasks and nothing else: what it has children is theirs, to be
    ended (see `leftovers`). Also makes it the reaper of its orphaned descendants (Linux;
    else False)."""
    global _claimed
    _claimed = True
    if not _LINUX:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def release() -> None:
    """The worker that claimed this process stopped: what the process starts from now on
    is the program's own again (a worker embedded in a program, a test process)."""
    global _claimed
    _claimed = False


def add_helper(pid: int) -> None:
    """`pid` is one of this process's own helpers, not a task's child."""
    _helpers.add(pid)


def remove_helper(pid: int) -> None:
    _helpers.discard(pid)


def has_children() -> bool:
    """Whether this process has any child process, running or exited (one system call)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def children(pid: int, tid: int | None = None) -> list[int]:
    """The children of process `pid` (of its thread `tid` only, if given)."""
    if not _LINUX:
        return []
    if tid is not None and pid == os.getpid():
        return _own_children(tid)
    try:
        tids = [tid] if tid is not None else os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/children", "rb") as f:
                found.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return found


#: Open /proc/<pid>/task/<tid>/children files of this process's own threads, by tid: a
#: pool's check after every task re-reads one (pread: 0.5 µs) instead of opening it (6 µs,
#: timeit). A forked child forgets its parent's (`_forget_children_files`).
_children_files: dict[int, int] = {}


def _forget_children_files() -> None:
    for fd in _children_files.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _children_files.clear()


os.register_at_fork(after_in_child=_forget_children_files)


def _read_own_children(tid: int, size: int = 4096) -> bytes:
    """The start of thread `tid`'s children file (b"" if it has none, or is gone)."""
    fd = _children_files.get(tid)
    try:
        if fd is None:
            path = f"/proc/{os.getpid()}/task/{tid}/children"
            fd = _children_files[tid] = os.open(path, os.O_RDONLY)
        return os.pread(fd, size, 0)
    except OSError:  # the thread is gone
        if fd is not None:
            os.close(_children_files.pop(tid))
        return b""


def _own_children(tid: int) -> list[int]:
    data = _read_own_children(tid)
    fd = _children_files.get(tid)
    while fd is not None and len(data) % 4096 == 0 and data:  # a full read: there may be more
        try:
            more = os.pread(fd, 4096, len(data))
        except OSError:
            break
        if not more:
            break
        data += more
    return [int(p) for p in data.split()]


def left_anything(*tids: int) -> bool:
    """The check a pool makes after each task, on threads `tids` that ran it: whether
    `leftovers(*tids)` may find anything. False unless this process's tasks own its
    children (`claim`) and one of those threads has a child, or multiprocessing's shared
    helpers run (their children may be a task's). One read of a kept-open /proc file per
    thread: no exception to raise and catch when there is none, as `has_children` has
    (a third of its cost)."""
    if not _claimed or not _LINUX:
        return False
    if getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None) or getattr(
        multiprocessing.resource_tracker._resource_tracker, "_pid", None
    ):
        return True
    for tid in tids:  # noqa: SIM110 (a generator for `any` costs as much as the read)
        if _read_own_children(tid, 1):
            return True
    return False


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot); None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def descendants(roots: Iterable[int], skip: Iterable[int] = ()) -> list[Proc]:
    """`roots` and everything below them that is alive, parents before children."""
    skipped = set(skip)
    found: list[Proc] = []
    todo = [p for p in roots if p not in skipped]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        started = start_time(pid)
        if started is not None:
            found.append((pid, started))
        todo.extend(p for p in children(pid) if p not in skipped)
    return found


def _python_helpers() -> set[int]:
    """multiprocessing's per-process helpers (forkserver, resource tracker): started by a
    task but shared by every task of this process, and idle between them. Their children
    are a task's, not they themselves."""
    pids = {
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    }
    return {p for p in pids if p}


def leftovers(*tids: int, alone: bool = True) -> list[Proc]:
    """What tasks of this process left running: its children (those of threads `tids`, if
    any are given) and all below them, less its own helpers. The children of
    multiprocessing's forkserver (shared by every task of the process) are included when
    the tasks in question run `alone`; the forkserver itself never is."""
    if not _claimed or not has_children():
        return []
    shared = _python_helpers()
    pid = os.getpid()
    found = [p for t in tids for p in children(pid, t)] if tids else children(pid)
    roots = [p for p in found if p not in _helpers and p not in shared]
    _reap((p, 0) for p in roots if start_time(p) is None)
    if alone:
        roots += [c for p in shared for c in children(p)]
    return descendants(roots, skip=shared | _helpers)


def _alive(proc: Proc) -> bool:
    return start_time(proc[0]) == proc[1]


def _signal(procs: Iterable[Proc], sig: int) -> None:
    for pid, started in procs:
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _reap(procs: Iterable[Proc]) -> None:
    """Collect the exit status of those that are this process's children (adopted orphans
    included), so they do not stay zombies."""
    for pid, _ in procs:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def end(procs: list[Proc], grace: float) -> list[Proc]:
    """SIGTERM `procs`, SIGKILL those still alive `grace` seconds later; wait until all
    are gone. Returns those that were still alive when signalled."""
    if not procs:
        return []
    alive = [p for p in procs if _alive(p)]
    # Stopped processes get SIGCONT too, or SIGTERM would wait for them to be resumed.
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _signal(alive, sig)
    deadline = time.monotonic() + grace
    remaining = alive
    while remaining:
        _reap(remaining)
        remaining = [p for p in remaining if _alive(p)]
        if not remaining:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "%d process(es) still running %.0fs after SIGTERM: killing %s",
                len(remaining),
                grace,
                ", ".join(str(pid) for pid, _ in remaining),
            )
            _signal(remaining, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(_POLL)
    _reap(alive)  # those that became zombies between the last reap and the last look
    return alive


def end_leftovers(task: str, grace: float, *tids: int, alone: bool = True) -> None:
    """After a task returned: end what it left running (see `leftovers`), and say so."""
    procs = leftovers(*tids, alone=alone)
    if procs:
        log.warning(
            "task %s returned leaving %d process(es) running: ending them (%s)",
            task,
            len(procs),
            ", ".join(str(pid) for pid, _ in procs),
        )
        end(procs, grace)


def end_in_background(procs: list[Proc], grace: float) -> None:
    """`end` on a thread of its own, for callers that must not wait out the grace."""
    if procs:
        threading.Thread(target=end, args=(procs, grace), name="soloist-tree", daemon=True).start()


class PeakMemory(threading.Thread):
    """Samples the resident memory of this process and of what its tasks started, every
    `interval` seconds, so a memory limit counts a task's pool, which is gone by the time
    the task returns. Reading `/proc` happens only while there is a child process."""

    def __init__(self, own: Callable[[], float], interval: float = 1.0) -> None:
        super().__init__(name="soloist-memory", daemon=True)
        self.own = own
        self.interval = interval
        self._peak = 0.0
        self.start()

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            if has_children():
                self._peak = max(self._peak, self.own() + rss_mb(leftovers()))

    def take(self) -> float:
        """The highest total seen since the last call, this process's own memory now
        included; starts over."""
        peak, self._peak = self._peak, 0.0
        return max(peak, self.own())


def rss_mb(procs: Iterable[Proc]) -> float:
    """The resident memory of `procs` together, in MB."""
    total = 0
    for pid, _ in procs:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20
