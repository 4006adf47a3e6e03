"""The embedded broker: a SQLite file in WAL mode (heartbeats in a second one beside it),
shared by any number of processes.

Schema (all tables prefixed `soloist_`):

* `messages`: one row per waiting or leased message. `visible_at` is when it may be
  handed out: its delay while waiting, its lease's expiry while leased. `receipt` is
  WAITING (negative) while waiting and a fresh random number for each lease, which fences
  settles. Both take 8 bytes, and `body` is the last column: so a claim rewrites the
  row in place, without copying (or reading through) a big body's overflow pages.
  `delayed` is 1 while a delay (a countdown, a retry's back-off) has not run out: such
  rows stay out of the hand-out index until a claim finds them due and clears it.
  A worker's acks go to its ack log and are committed in batches (brokers/sqlite_acks.py).
  An ack committed alone (`ack`, or with its result record) marks its row DONE
  (`receipt`, in place) rather than deleting it: a one-row write transaction then writes
  one page to the WAL (the row's) instead of two (and the hand-out index's), a third of
  its cost. The next claim on the queue walks the hand-out index from the front, where
  acked rows are, and deletes the DONE rows it passes in its own transaction, a batch's
  index entries in a page or two. Until then they count for nothing (stats, purge) and
  are never handed out.
* `dead`: the dead-letter store, with the reason and counts.
* `workers`: heartbeats, in a file of their own (`<file>-workers`), so that they do not
  wake idle workers (below).
* `clock`: the base of the database's clock for the current boot (see below).

Time. Leases and delays are deadlines shared by every process on the file, so they are
read on one clock that a step of the wall clock does not move: CLOCK_MONOTONIC, which on
Linux is one clock for every process of a machine (WAL already requires them all to be on
one machine), plus an offset fixed for the boot (the wall time minus the monotonic time
when the first process of the boot opened the file, kept in `clock` under the kernel's
boot id). Within a boot it never steps; after a reboot it starts again from the wall
clock, so a delay outlives a reboot and every lease of the old boot has lapsed. Where
there is no boot id (not Linux) the wall clock is used, and stepping it moves leases.

Claiming is one `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING` inside a
`BEGIN IMMEDIATE` transaction: SQLite admits one writer at a time, so two workers can
never claim the same row. One that meets a lapsed lease first commits the acks in the
logs of dead workers, so that what they acked is not handed out again. An idle `fetch`
sleeps until another process commits (brokers/sqlite_wait.py: inotify on Linux,
`PRAGMA data_version` polling elsewhere), then reads when the next message is due without
taking the write lock, and runs the claim again only once one is (a settle's or a
result's commit wakes it, and it reads).

`synchronous=NORMAL` (the default, `?synchronous=full` to change) keeps every committed
publish, and every ack in a worker's ack log, across a crash of any process; only a power
loss can drop the last commits. With `full` acks are committed one by one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import sqlite_acks
from .base import (
    DEFAULT_MAX_DELIVERIES,
    AckPipe,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
)
from .sqlite_file import Database, path_from_url
from .sqlite_wait import CommitWait

#: `receipt` of a message leased to nobody (the schema's default), and the range leases'
#: receipts are drawn from: all 8-byte integers in SQLite's record format (module doc).
WAITING = -(1 << 62)
_RECEIPTS = 1 << 61
#: `receipt` of an acked row, left for the next claim to delete (module doc): above every
#: lease's receipt, and 8 bytes as they are, so an ack rewrites the row in place.
DONE = 1 << 62

#: The broker's tables. The claim walks `soloist_messages_ready` in hand-out order and
#: stops at its LIMIT; delayed rows are in `soloist_messages_delayed` only, by due time, so
#: finding the due ones costs nothing per row still waiting. No index holds a leased row's
#: `visible_at` (its lease expiry): a claim and an ack would each rewrite such an entry, a
#: third of the broker's cost.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS soloist_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    receipt INTEGER NOT NULL DEFAULT {WAITING},
    deliveries INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    delayed INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS soloist_messages_ready
    ON soloist_messages (queue, priority DESC, id) WHERE delayed = 0;
CREATE INDEX IF NOT EXISTS soloist_messages_delayed
    ON soloist_messages (queue, visible_at) WHERE delayed = 1;
CREATE TABLE IF NOT EXISTS soloist_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS soloist_dead_queue ON soloist_dead (queue, id);
CREATE TABLE IF NOT EXISTS soloist_clock (
    boot TEXT PRIMARY KEY,
    offset REAL NOT NULL
);
"""
#: Heartbeats, in a file of their own beside the broker's (`<file>-workers`): a commit to
#: the broker's file wakes every idle worker, and each worker beats every few seconds.
_WORKERS = """
CREATE TABLE IF NOT EXISTS soloist_workers (
    id TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    seen_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""

#: A queue's counts through its two indexes (with no index on `queue` alone, a plain
#: `WHERE queue = ?` would read every queue's rows): delayed rows all, and those not due;
#: due rows waiting, those not due (given back for later), and those leased (acked rows
#: waiting to be deleted are none of these). A delayed row is never leased, so its index
#: alone counts it: messages scheduled ahead cost no row read.
_COUNTS = (
    "SELECT (SELECT count(*) FROM soloist_messages INDEXED BY soloist_messages_delayed"
    " WHERE queue = :queue AND delayed = 1), (SELECT count(*) FROM soloist_messages INDEXED BY"
    " soloist_messages_delayed WHERE queue = :queue AND delayed = 1 AND visible_at > :now),"
    f" coalesce(sum(receipt < 0 OR (visible_at <= :now AND receipt != {DONE})), 0),"
    " coalesce(sum(receipt < 0 AND visible_at > :now), 0),"
    f" coalesce(sum(receipt > 0 AND receipt != {DONE} AND visible_at > :now), 0)"
    " FROM soloist_messages INDEXED BY soloist_messages_ready WHERE queue = :queue AND delayed = 0"
)

#: Ids per `IN (…)` list, well under SQLite's bound on parameters in one statement.
_MAX_PARAMS = 500
#: Delayed messages a claim makes ready at most, the first due first: a million falling
#: due at once would otherwise hold the write lock for many seconds in one claim.
_PROMOTE = 1000
#: Linux: a random id per boot, the same for every process (see the module doc on time).
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


_INSERT = (
    "INSERT INTO soloist_messages (queue, body, priority, visible_at, delayed)"
    " VALUES (?, ?, ?, ?, ?)"
)


#: One ack (`ack`, the ack pipe); `ack_many` deletes its batch at once instead.
_ACK = f"UPDATE soloist_messages SET receipt = {DONE}"


_DELETE_QUEUE = "DELETE FROM soloist_messages WHERE queue = ?"


def _due(now: float, delay: float) -> tuple[float, int]:
    """visible_at and delayed for a message that may go out `delay` seconds from `now`."""
    return now + max(delay, 0), int(delay > 0)


#: The broker tables' layout (`soloist_schema`), and with it how acks are kept (DONE rows,
#: the workers' ack logs: sqlite_acks).
SCHEMA_VERSION = 5


class SQLiteBroker(Broker):
    interruptible = True

    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        path, options = path_from_url(url)
        self.url = url
        self.max_deliveries = options.get("max_deliveries", max_deliveries)
        self.db = Database.at(path, options, _SCHEMA, "broker", SCHEMA_VERSION)
        self.beats = Database(
            path + "-workers", "NORMAL", _WORKERS, self.db.busy_timeout, "workers", 1
        )
        self._commits = CommitWait(path)
        self._offset = self._clock_offset()

    def _clock_offset(self) -> float | None:
        """The database clock's offset from CLOCK_MONOTONIC for this boot (module doc)."""
        try:
            with open(_BOOT_ID) as f:
                boot = f.read().strip()
        except OSError:
            return None
        with self.db.write() as conn:
            conn.execute("DELETE FROM soloist_clock WHERE boot != ?", (boot,))
            conn.execute(
                "INSERT OR IGNORE INTO soloist_clock (boot, offset) VALUES (?, ?)",
                (boot, time.time() - time.monotonic()),
            )
            (offset,) = conn.execute(
                "SELECT offset FROM soloist_clock WHERE boot = ?", (boot,)
            ).fetchone()
        return float(offset)

    def _now(self) -> float:
        """The database clock: what `visible_at` (delays, lease expiries) is read on."""
        if self._offset is None:
            return time.time()
        return time.monotonic() + self._offset

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        cur = self.db.connection().execute(
            _INSERT, (queue, body, priority, *_due(self._now(), delay))
        )
        return str(cur.lastrowid)

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        """Publish (queue, body, delay, priority) items in one transaction."""
        now = self._now()
        ids = []
        with self.db.write() as conn:
            for queue, body, delay, priority in items:
                cur = conn.execute(_INSERT, (queue, body, priority, *_due(now, delay)))
                ids.append(str(cur.lastrowid))
        return ids

    def _claim(self, queues: Sequence[str], max_count: int, lease: float) -> list[Delivery]:
        applied: list[str] = []
        out = self._claim_rows(queues, max_count, lease, applied)
        for path in applied:  # committed: those acks are in the file now
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return out

    def _apply_orphans(self, conn: sqlite3.Connection, applied: list[str]) -> None:
        """Commit, with the claim, the acks in the logs of dead workers (sqlite_acks)."""
        for path, acks in sqlite_acks.orphans(self.db.path):
            conn.executemany("DELETE FROM soloist_messages WHERE id = ? AND receipt = ?", acks)
            applied.append(path)

    def _claim_rows(
        self, queues: Sequence[str], max_count: int, lease: float, applied: list[str]
    ) -> list[Delivery]:
        """The claim's transaction; the dead workers' ack logs it applied go in `applied`."""
        now = self._now()
        receipt = _RECEIPTS + random.getrandbits(61)
        out: list[Delivery] = []
        swept = False
        with self.db.write() as conn:
            for queue in queues:
                conn.execute(
                    "UPDATE soloist_messages SET delayed = 0 WHERE id IN (SELECT id FROM"
                    " soloist_messages INDEXED BY soloist_messages_delayed WHERE queue = ?"
                    " AND delayed = 1 AND visible_at <= ? ORDER BY visible_at LIMIT ?)",
                    (queue, now, max(_PROMOTE, max_count)),
                )
                while len(out) < max_count:
                    # Left to itself (no statistics) the planner takes the visible_at index
                    # and sorts every due row of the queue on each claim: O(backlog). This
                    # one walks in hand-out order and stops at LIMIT, reading past only the
                    # leased rows that sort ahead (as many as are in flight), and takes the
                    # acked (DONE) rows it meets to delete them.
                    candidates = conn.execute(
                        f"SELECT id, deliveries, receipt = {DONE} FROM soloist_messages"
                        " INDEXED BY soloist_messages_ready WHERE queue = ? AND delayed = 0"
                        f" AND (visible_at <= ? OR receipt = {DONE})"
                        " ORDER BY priority DESC, id LIMIT ?",
                        (queue, now, max_count - len(out)),
                    ).fetchall()
                    if not candidates:
                        break
                    done = [rid for rid, _, acked in candidates if acked]
                    if done:
                        marks = ",".join("?" * len(done))
                        conn.execute(f"DELETE FROM soloist_messages WHERE id IN ({marks})", done)
                        candidates = [c for c in candidates if not c[2]]
                        if not candidates:
                            continue  # only acked rows so far: walk on
                    if not swept and any(c[1] for c in candidates):
                        # A lease lapsed: its worker may have died with acks in its log.
                        swept = True
                        self._apply_orphans(conn, applied)
                        if applied:
                            continue  # walk again: what those logs acked is gone
                    # A message back from a lapsed lease goes out alone (Broker.fetch).
                    ids = [c[0] for c in itertools.takewhile(lambda c: c[1] == 0, candidates)]
                    alone = not ids and not out
                    if alone:
                        ids = [candidates[0][0]]
                    if not ids:
                        return out
                    rows = conn.execute(
                        "UPDATE soloist_messages SET receipt = ?, visible_at = ?,"
                        " deliveries = deliveries + 1"
                        f" WHERE id IN ({','.join('?' * len(ids))})"
                        " RETURNING id, body, deliveries, retries",
                        (receipt, now + lease, *ids),
                    ).fetchall()
                    order = {rid: i for i, rid in enumerate(ids)}
                    rows.sort(key=lambda r: order[r[0]])  # RETURNING gives no order
                    for rid, body, deliveries, retries in rows:
                        if deliveries > self.max_deliveries:
                            self._bury(conn, rid, poison_reason(deliveries - 1))
                        else:
                            out.append(
                                Delivery(str(rid), queue, body, deliveries, retries, receipt)
                            )
                    if (alone and out) or len(ids) < len(candidates):
                        return out
        return out

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while not self._commits.interrupted():
            got = self._claim(queues, max_count, lease)
            if got:
                self._commits.claimed_at = time.monotonic()
                return got
            if time.monotonic() >= deadline:
                return got
            self._idle(queues, deadline)
        return []

    def interrupt(self) -> None:
        self._commits.interrupt()

    def _idle(self, queues: Sequence[str], deadline: float) -> None:
        """Wait until a message of `queues` may be claimable or `deadline`. A commit (any
        process's: a publish, and also a settle or a result) wakes it to read when the
        next delay or lease runs out, a read that takes no write lock; the claim, which
        does, runs only once that time has come."""
        marks = ",".join("?" * len(queues))
        while time.monotonic() < deadline:
            version = self.db.data_version()
            # A waiting row's visible_at has passed; a leased one's is its lease's expiry.
            rows = self.db.connection().execute(
                "SELECT min(visible_at) FROM soloist_messages INDEXED BY soloist_messages_delayed"
                f" WHERE queue IN ({marks}) AND delayed = 1 UNION ALL SELECT min(visible_at) FROM"
                " soloist_messages INDEXED BY soloist_messages_ready"
                f" WHERE queue IN ({marks}) AND delayed = 0",
                (*queues, *queues),
            )
            due = min((r[0] for r in rows if r[0] is not None), default=None)
            wait = deadline - time.monotonic() if due is None else due - self._now()
            if wait <= 0:
                return
            until = min(deadline, time.monotonic() + wait)
            self._commits.wait(self.db.data_version, version, until)
            if self._commits.interrupting:
                return

    def _settle(self, sql: str, delivery: Delivery, *params: object) -> bool:
        cur = self.db.connection().execute(
            sql + " WHERE id = ? AND receipt = ?", (*params, int(delivery.id), delivery.receipt)
        )
        return cur.rowcount == 1

    def ack(self, delivery: Delivery) -> bool:
        """Mark the row DONE, for the next claim to delete (module doc)."""
        return self._settle(_ACK, delivery)

    def ack_pipe(self, results: object) -> AckPipe:
        """Acks written to this worker's ack log (sqlite_acks) and committed in one
        transaction before the next fetch. A task's result record is stored (committed)
        before its ack goes to the log: a write transaction of one page, where one holding
        the ack too would write the message's page as well. With `synchronous=full` (or
        extra) each ack is committed as it comes, as the log would not survive a power loss
        as those commits do; a result store in the same file then stores each record in
        its ack's transaction (one sync per task, not two)."""
        put = getattr(results, "put_call", None)
        same = getattr(getattr(results, "db", None), "path", None) == self.db.path
        logged = self.db.synchronous in ("OFF", "NORMAL")
        return _SQLiteAckPipe(self, put if same and not logged else None, logged)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """All in one transaction: one fenced DELETE per receipt (per fetch). Only where it
        deleted fewer rows than it was given (some deliveries were stale) is it undone and
        run again with `RETURNING id`, to tell which: returning every id costs a fifth more."""
        by_receipt: dict[Any, list[int]] = {}
        for d in deliveries:
            by_receipt.setdefault(d.receipt, []).append(int(d.id))
        stale: set[tuple[Any, int]] = set()
        with self.db.write() as conn:
            for receipt, ids in by_receipt.items():
                for start in range(0, len(ids), _MAX_PARAMS):
                    chunk = ids[start : start + _MAX_PARAMS]
                    sql = (
                        "DELETE FROM soloist_messages WHERE receipt = ?"
                        f" AND id IN ({','.join('?' * len(chunk))})"
                    )
                    conn.execute("SAVEPOINT ack_many")
                    if conn.execute(sql, (receipt, *chunk)).rowcount != len(chunk):
                        conn.execute("ROLLBACK TO ack_many")
                        rows = conn.execute(sql + " RETURNING id", (receipt, *chunk))
                        acked = {rid for (rid,) in rows}
                        stale.update((receipt, rid) for rid in chunk if rid not in acked)
                    conn.execute("RELEASE ack_many")
        if not stale:
            return [True] * len(deliveries)
        return [(d.receipt, int(d.id)) not in stale for d in deliveries]

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        return self._settle(
            f"UPDATE soloist_messages SET receipt = {WAITING}, deliveries = 0,"
            " retries = retries + ?, visible_at = ?, delayed = ?",
            delivery,
            int(counted),
            *_due(self._now(), delay),
        )

    def _bury(self, conn: sqlite3.Connection, rid: int, reason: str) -> None:
        conn.execute(
            "INSERT INTO soloist_dead (queue, body, reason, deliveries, retries, dead_at)"
            " SELECT queue, body, ?, deliveries, retries, ? FROM soloist_messages WHERE id = ?",
            (reason, time.time(), rid),
        )
        conn.execute("DELETE FROM soloist_messages WHERE id = ?", (rid,))

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        with self.db.write() as conn:
            held = conn.execute(
                "SELECT 1 FROM soloist_messages WHERE id = ? AND receipt = ?",
                (int(delivery.id), delivery.receipt),
            ).fetchone()
            if held:
                self._bury(conn, int(delivery.id), reason)
            return held is not None

    def release(self, deliveries: Sequence[Delivery]) -> None:
        now = self._now()
        with self.db.write() as conn:
            conn.executemany(
                f"UPDATE soloist_messages SET receipt = {WAITING}, visible_at = ?,"
                " deliveries = deliveries - 1 WHERE id = ? AND receipt = ?",
                [(now, int(d.id), d.receipt) for d in deliveries],
            )

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        until = self._now() + lease
        stale = []
        with self.db.write() as conn:
            for d in deliveries:
                cur = conn.execute(
                    "UPDATE soloist_messages SET visible_at = ? WHERE id = ? AND receipt = ?",
                    (until, int(d.id), d.receipt),
                )
                if cur.rowcount != 1:
                    stale.append(d)
        return stale

    def ping(self) -> None:
        """Read the file's schema table: the file is there and readable."""
        self.db.connection().execute("SELECT 1 FROM soloist_schema LIMIT 1").fetchone()

    def depth(self, queue: str) -> int:
        return self.stats(queue).depth

    def stats(self, queue: str) -> QueueStats:
        conn = self.db.connection()
        counts = conn.execute(_COUNTS, {"queue": queue, "now": self._now()}).fetchone()
        delayed, not_due, due, given_back, in_flight = counts
        (dead,) = conn.execute(
            "SELECT count(*) FROM soloist_dead WHERE queue = ?", (queue,)
        ).fetchone()
        return QueueStats(delayed + due, not_due + given_back, in_flight, dead)

    def purge(self, queue: str) -> int:
        """Delete the waiting messages (counted) and the acked rows left (not counted)."""
        with self.db.write() as conn:
            conn.execute(f"{_DELETE_QUEUE} AND delayed = 0 AND receipt = {DONE}", (queue,))
            cur = conn.execute(
                f"{_DELETE_QUEUE} AND (receipt < 0 OR visible_at <= ?)", (queue, self._now())
            )
            return cur.rowcount

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT id, queue, body, reason, deliveries, retries, dead_at FROM soloist_dead"
                " WHERE queue = ? ORDER BY id LIMIT ?",
                (queue, limit),
            )
            .fetchall()
        )
        return [DeadLetter(str(r[0]), *r[1:]) for r in rows]

    def _dead_ids(
        self, conn: sqlite3.Connection, queue: str, ids: Sequence[str] | None
    ) -> list[int]:
        if ids is None:
            rows = conn.execute("SELECT id FROM soloist_dead WHERE queue = ?", (queue,))
            return [r[0] for r in rows]
        return [int(i) for i in ids if i.isdigit()]

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        now = self._now()
        moved = 0
        with self.db.write() as conn:
            for rid in self._dead_ids(conn, queue, ids):
                cur = conn.execute(
                    "INSERT INTO soloist_messages (queue, body, priority, visible_at)"
                    " SELECT queue, body, 0, ? FROM soloist_dead WHERE id = ? AND queue = ?",
                    (now, rid, queue),
                )
                if cur.rowcount:
                    conn.execute("DELETE FROM soloist_dead WHERE id = ?", (rid,))
                    moved += 1
        return moved

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        with self.db.write() as conn:
            return sum(
                conn.execute(
                    "DELETE FROM soloist_dead WHERE id = ? AND queue = ?", (rid, queue)
                ).rowcount
                for rid in self._dead_ids(conn, queue, ids)
            )

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        now = time.time()
        self.beats.connection().execute(
            "INSERT OR REPLACE INTO soloist_workers (id, info, seen_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (worker_id, info, now, now + ttl),
        )

    def workers(self) -> dict[str, tuple[bytes, float]]:
        conn = self.beats.connection()
        conn.execute("DELETE FROM soloist_workers WHERE expires_at < ?", (time.time(),))
        rows = conn.execute("SELECT id, info, seen_at FROM soloist_workers").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def forget_worker(self, worker_id: str) -> None:
        self.beats.connection().execute("DELETE FROM soloist_workers WHERE id = ?", (worker_id,))

    def close(self) -> None:
        self._commits.close()
        self.beats.close()
        self.db.close()


#: A result store's put of one record kept `ttl` seconds, as a statement run on a
#: connection the caller holds a write transaction on.
PutCall = Callable[[tuple[str, str, bytes], float], Callable[[sqlite3.Connection], object]]


class _SQLiteAckPipe(AckPipe):
    """`SQLiteBroker.ack_pipe`: each ack written to the ack log, if `logged`, and
    committed with the others in `collect` (or when the log is full), else committed in
    `send`, with its record where `put` stores it."""

    def __init__(self, broker: SQLiteBroker, put: PutCall | None, logged: bool) -> None:
        self.broker = broker
        self._put = put
        self.records = put is not None
        self._log = sqlite_acks.AckLog(broker.db.path) if logged else None
        #: Each delivery sent, in order: whether it was acked, None while in the log.
        self._acked: list[bool | None] = []
        #: The deliveries in the log, with their places in `_acked`.
        self._logged: list[tuple[int, Delivery]] = []

    @property
    def pending(self) -> int:
        return len(self._acked)

    def send(self, delivery: Delivery, record: tuple[str, str, bytes] | None, ttl: float) -> None:
        if record is None:
            log = self._log
            if log is None:
                self._acked.append(self.broker.ack(delivery))
                return
            if log.count == sqlite_acks.CAPACITY:
                self._commit()
            log.append(int(delivery.id), delivery.receipt)
            self._logged.append((len(self._acked), delivery))
            self._acked.append(None)
            return
        if self._put is None:
            raise ValueError("the result store is elsewhere: store the record first")
        store = self._put(record, ttl)
        with self.broker.db.write() as conn:
            store(conn)
            acked = conn.execute(
                _ACK + " WHERE id = ? AND receipt = ?", (int(delivery.id), delivery.receipt)
            ).rowcount
        self._acked.append(acked == 1)

    def _commit(self) -> None:
        """Commit the acks in the log, and note which were stale."""
        if not self._logged or self._log is None:
            return
        acked = self.broker.ack_many([d for _, d in self._logged])
        for (at, _), ok in zip(self._logged, acked, strict=True):
            self._acked[at] = ok
        self._logged = []
        self._log.clear()

    def collect(self) -> list[bool]:
        self._commit()
        acked, self._acked = self._acked, []
        return [bool(a) for a in acked]

    def close(self) -> None:
        self._acked = []
        self._logged = []
        if self._log is not None:
            self._log.close()
