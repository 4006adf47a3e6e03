"""A worker's ack log: each ack written to a memory-mapped file of the worker's own as its
task ends, and committed to the SQLite file in batches (`SQLiteBroker.ack_pipe`).

A commit per ack costs a write transaction (six lock calls on `-shm`, a page to the WAL:
about 10 µs of CPU, as much again as the worker's own Python). Storing 16 bytes (the
message id and the lease's receipt) into a shared mapping is a memory write, and it
survives the process as a commit with `synchronous=NORMAL` does: a SIGKILL leaves it in
the page cache, only a power loss or an OS crash drops it. So a worker acks each task
before the next starts for almost nothing, and a kill still reruns only the task that was
running.

The worker holds a POSIX lock on its log (`<file>-acks/<pid>-<random>`) for its life
(not inherited by a fork; dropped by the kernel when the process dies). A claim that
meets a message whose lease lapsed first applies every log whose lock it can take, its
writer being dead, in its own transaction: the fenced deletes drop the messages acked
there, and only the rest goes out again. Applying a log twice deletes nothing more (the
receipts fence it), so a log is unlinked only once the transaction that applied it has
committed.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import uuid
from collections.abc import Iterator

#: One entry: the message id and the lease's receipt, both 8-byte integers. A receipt is
#: never 0 and an entry is cleared to zeros, so a torn entry (a kill mid-write) fences
#: nothing away: its receipt cannot match.
_ENTRY = struct.Struct("<qq")
#: Entries a log holds, one 4 KB page: the pipe commits them when it fills up.
CAPACITY = 4096 // _ENTRY.size

#: The logs this process writes, by file name: never applied by a claim in this process
#: (its own lock does not keep this process out), with the pid that made each (a fork's
#: child must not take its parent's for its own).
_OURS: dict[str, int] = {}


def folder(db_path: str) -> str:
    """Where the logs of the workers on `db_path` live."""
    return db_path + "-acks"


class AckLog:
    """This process's log for one SQLite file."""

    def __init__(self, db_path: str) -> None:
        # Open to whoever may write the database (as SQLite makes its -wal and -shm, the
        # umask left out): another user's worker must be able to apply a log, or add its own.
        mode = os.stat(db_path).st_mode & 0o666
        try:
            os.mkdir(folder(db_path))
            os.chmod(folder(db_path), mode | (mode & 0o444) >> 2)  # x where r
        except FileExistsError:
            pass
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked before it shows under its name: a claim never finds it unlocked.
        hidden = os.path.join(folder(db_path), "." + name)
        self._fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        os.fchmod(self._fd, mode)
        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Written, not truncated to size: a store into a hole of a mapping on a full disk
        # would kill the process (SIGBUS); this way the disk space is taken now.
        os.pwrite(self._fd, bytes(CAPACITY * _ENTRY.size), 0)
        self.name = name
        self.path = os.path.join(folder(db_path), name)
        os.rename(hidden, self.path)
        _OURS[name] = os.getpid()
        self._map = mmap.mmap(self._fd, CAPACITY * _ENTRY.size)
        self.count = 0

    def append(self, rid: int, receipt: int) -> None:
        """Write one ack (the caller commits a full log's first)."""
        _ENTRY.pack_into(self._map, self.count * _ENTRY.size, rid, receipt)
        self.count += 1

    def clear(self) -> None:
        """Forget the entries: their acks are committed."""
        self._map[: self.count * _ENTRY.size] = bytes(self.count * _ENTRY.size)
        self.count = 0

    def close(self) -> None:
        """Remove the log, or, with entries not committed (the store was down), leave it
        for a claim to apply once this process has ended."""
        _OURS.pop(self.name, None)
        if self.count == 0:
            os.unlink(self.path)
        self._map.close()
        os.close(self._fd)


def entries(data: bytes) -> list[tuple[int, int]]:
    """The (id, receipt) entries written in a log's bytes."""
    whole = len(data) - len(data) % _ENTRY.size
    return [(rid, receipt) for rid, receipt in _ENTRY.iter_unpack(data[:whole]) if receipt]


def orphans(db_path: str) -> Iterator[tuple[str, list[tuple[int, int]]]]:
    """(path, entries) of each log on `db_path` whose writer is dead: its lock is free."""
    try:
        names = os.listdir(folder(db_path))
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".") or _OURS.get(name) == os.getpid():
            continue
        path = os.path.join(folder(db_path), name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # applied and removed meanwhile (or not ours to write: left alone)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its worker lives
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        yield path, entries(data)
