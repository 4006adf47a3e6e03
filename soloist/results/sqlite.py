"""Results in a SQLite file (by default the broker's own), expired on a schedule.

A record is one row keyed by its task id (`WITHOUT ROWID`: one B-tree, no separate
index on the key) and there is no index on its expiry: storing a record writes one page
to the WAL, not three (the table's, its key's index, the expiry index), which halves the
commit a worker pays for each task's result. Expired records are invisible to every read
at once; their rows are deleted by a sweep that walks the table in key order, a bounded
window at a time, as the store is written to (`_SWEEP_ROWS` every `_STEP_PUTS` records, so
the walk always outpaces what this process adds), or the whole table by `expire`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from ..brokers.sqlite_file import Database, path_from_url
from .base import FINAL_STATES, REVOKED, ResultStore, Revocation

#: The result store tables' layout (see brokers.sqlite: `soloist_schema`).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS soloist_results (
    task_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS soloist_revoked (
    task_id TEXT PRIMARY KEY,
    revoked_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    terminate INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS soloist_revoked_at ON soloist_revoked (revoked_at);
CREATE TABLE IF NOT EXISTS soloist_chords (
    chord_id TEXT PRIMARY KEY,
    added INTEGER NOT NULL,
    last INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS soloist_chord_members (
    chord_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (chord_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS soloist_keys (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS soloist_tokens (
    key TEXT NOT NULL,
    taken_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS soloist_tokens_key ON soloist_tokens (key, taken_at);
CREATE TABLE IF NOT EXISTS soloist_slots (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, holder)
);
"""

#: The other tables' expired rows are swept by a writer at most this often, and a step of
#: the results sweep (module doc) is taken at least this often by one that writes records.
_SWEEP_EVERY = 60.0
#: Records a step of the results sweep reads (about a millisecond of the write lock)...
_SWEEP_ROWS = 1000
#: ...every this many records stored: it reads two for each one this process adds.
_STEP_PUTS = 500

_FINAL = ",".join(f"'{s}'" for s in sorted(FINAL_STATES))

_UPSERT = (
    "INSERT INTO soloist_results (task_id, state, body, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, body = excluded.body,"
    "  expires_at = excluded.expires_at"
    f" WHERE soloist_results.state NOT IN ({_FINAL}) OR soloist_results.expires_at <= ?"
)

# Inserts unless a live record is there (an expired one is replaced).
_INSERT_NEW = (
    "INSERT INTO soloist_results (task_id, state, body, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, body = excluded.body,"
    "  expires_at = excluded.expires_at WHERE soloist_results.expires_at <= ?"
)


class SQLiteResultStore(ResultStore):
    def __init__(self, url: str) -> None:
        path, options = path_from_url(url)
        self.url = url
        self.db = Database.at(path, options, _SCHEMA, "results", SCHEMA_VERSION)
        self._next_sweep = 0.0
        #: Records stored since the last step of the results sweep, and where it goes on.
        self._puts = 0
        self._cursor = ""

    def _sweep(self, stored: int) -> float:
        """Count `stored` records about to be written and sweep, when it is due, before the
        caller's write transaction (module doc). Returns the time."""
        self._puts += stored
        now = time.time()
        if self._puts >= _STEP_PUTS or now >= self._next_sweep:
            self._puts = 0
            if now >= self._next_sweep:
                self._next_sweep = now + _SWEEP_EVERY
                self._expire_others(now)
            self._step(now)
        return now

    def _step(self, now: float) -> None:
        """Delete the expired records among the next `_SWEEP_ROWS` in key order."""
        conn = self.db.connection()
        end = conn.execute(
            "SELECT task_id FROM soloist_results WHERE task_id > ? ORDER BY task_id"
            " LIMIT 1 OFFSET ?",
            (self._cursor, _SWEEP_ROWS - 1),
        ).fetchone()
        if end is None:  # the window reaches the end: the next step starts over
            conn.execute(
                "DELETE FROM soloist_results WHERE task_id > ? AND expires_at <= ?",
                (self._cursor, now),
            )
            self._cursor = ""
        else:
            conn.execute(
                "DELETE FROM soloist_results WHERE task_id > ? AND task_id <= ?"
                " AND expires_at <= ?",
                (self._cursor, end[0], now),
            )
            self._cursor = end[0]

    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        """One statement, committed on its own: the write a worker makes for each task."""
        now = self._sweep(1)
        conn = self.db.connection()
        return conn.execute(_UPSERT, (task_id, state, body, now + ttl, now)).rowcount == 1

    def put_many(self, items: Sequence[tuple[str, str, bytes]], ttl: float) -> list[bool]:
        """All in one transaction."""
        now = self._sweep(len(items))
        with self.db.write() as conn:
            return [
                conn.execute(_UPSERT, (task_id, state, body, now + ttl, now)).rowcount == 1
                for task_id, state, body in items
            ]

    def put_call(
        self, record: tuple[str, str, bytes], ttl: float
    ) -> Callable[[sqlite3.Connection], object]:
        """`put_many` of one record as a statement for a write transaction the caller
        holds on this file (`SQLiteBroker.ack_pipe` with `synchronous=full`: the record
        and its ack commit together)."""
        now = self._sweep(1)
        task_id, state, body = record
        return lambda conn: conn.execute(_UPSERT, (task_id, state, body, now + ttl, now))

    def put_new(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        now = self._sweep(1)
        conn = self.db.connection()
        return conn.execute(_INSERT_NEW, (task_id, state, body, now + ttl, now)).rowcount == 1

    def get(self, task_id: str) -> tuple[str, bytes] | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT state, body FROM soloist_results WHERE task_id = ? AND expires_at > ?",
                (task_id, time.time()),
            )
            .fetchone()
        )
        return (row[0], row[1]) if row else None

    def revoke(self, task_id: str, body: bytes, ttl: float, terminate: bool = False) -> bool:
        now = time.time()
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT state FROM soloist_results WHERE task_id = ? AND expires_at > ?",
                (task_id, now),
            ).fetchone()
            if row is not None and row[0] in FINAL_STATES and row[0] != REVOKED:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO soloist_results (task_id, state, body, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (task_id, REVOKED, body, now + ttl),
            )
            conn.execute(
                "INSERT OR REPLACE INTO soloist_revoked (task_id, revoked_at, expires_at,"
                " terminate) VALUES (?, ?, ?, ?)",
                (task_id, now, now + ttl, int(terminate)),
            )
        return True

    def revoked_since(self, since: float) -> list[Revocation]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT task_id, revoked_at, terminate FROM soloist_revoked"
                " WHERE revoked_at >= ? AND expires_at > ? ORDER BY revoked_at",
                (since, time.time()),
            )
            .fetchall()
        )
        return [Revocation(r[0], r[1], bool(r[2])) for r in rows]

    def forget(self, task_id: str) -> None:
        self.db.connection().execute("DELETE FROM soloist_results WHERE task_id = ?", (task_id,))

    def forget_if(self, task_id: str, record: tuple[str, bytes]) -> bool:
        cur = self.db.connection().execute(
            "DELETE FROM soloist_results WHERE task_id = ? AND state = ? AND body = ?",
            (task_id, *record),
        )
        return cur.rowcount == 1

    def chord_add_many(
        self, items: Sequence[tuple[str, int, int, bytes]], ttl: float
    ) -> list[list[bytes] | None]:
        """All in one transaction: each member row, the count beside it, and who completed it."""
        now = time.time()
        with self.db.write() as conn:
            return [_chord_add(conn, *item, now, ttl) for item in items]

    def expire(self) -> int:
        """Sweep every table whole (the results table is read through: no index on expiry)."""
        now = time.time()
        self._expire_others(now)
        conn = self.db.connection()
        return conn.execute("DELETE FROM soloist_results WHERE expires_at <= ?", (now,)).rowcount

    def _expire_others(self, now: float) -> None:
        """Delete the expired rows of the tables other than the results'."""
        conn = self.db.connection()
        conn.execute("DELETE FROM soloist_revoked WHERE expires_at <= ?", (now,))
        with self.db.write() as tx:
            tx.execute(
                "DELETE FROM soloist_chord_members WHERE chord_id IN"
                " (SELECT chord_id FROM soloist_chords WHERE expires_at <= ?)",
                (now,),
            )
            tx.execute("DELETE FROM soloist_chords WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM soloist_keys WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM soloist_slots WHERE expires_at <= ?", (now,))

    # Coordination (see ResultStore): each call one transaction, which holds SQLite's one
    # write lock, so a read-then-write inside it is atomic across processes; the clock is
    # read once the lock is held, so times follow the order of commits. Expired keys
    # and slots are ignored by reads and swept by `expire`; tokens are pruned per key.

    def claim(self, key: str, value: str, ttl: float) -> str | None:
        with self.db.write() as conn:
            now = time.time()
            row = conn.execute(
                "SELECT value FROM soloist_keys WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(
                "INSERT OR REPLACE INTO soloist_keys (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, now + ttl),
            )
            return None

    def swap(self, key: str, expected: str, value: str | None, ttl: float) -> bool:
        now = time.time()
        conn = self.db.connection()
        args: tuple[str | float, ...] = ()
        if value is None:
            sql = "DELETE FROM soloist_keys"
        else:
            sql, args = "UPDATE soloist_keys SET value = ?, expires_at = ?", (value, now + ttl)
        where = " WHERE key = ? AND value = ? AND expires_at > ?"
        return conn.execute(sql + where, (*args, key, expected, now)).rowcount == 1

    def set_value(self, key: str, value: str, ttl: float) -> None:
        self.db.connection().execute(
            "INSERT OR REPLACE INTO soloist_keys (key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, time.time() + ttl),
        )

    def peek(self, key: str) -> str | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT value FROM soloist_keys WHERE key = ? AND expires_at > ?",
                (key, time.time()),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def take_token(self, key: str, limit: int, per: float) -> float:
        with self.db.write() as conn:
            now = time.time()
            conn.execute(
                "DELETE FROM soloist_tokens WHERE key = ? AND taken_at <= ?", (key, now - per)
            )
            # The limit-th most recent token: while it is in the window, the window is full.
            row = conn.execute(
                "SELECT taken_at FROM soloist_tokens WHERE key = ?"
                " ORDER BY taken_at DESC LIMIT 1 OFFSET ?",
                (key, limit - 1),
            ).fetchone()
            if row is not None:
                return max(float(row[0]) + per - now, 1e-3)
            conn.execute("INSERT INTO soloist_tokens (key, taken_at) VALUES (?, ?)", (key, now))
            return 0.0

    def acquire_slot(self, key: str, holder: str, limit: int, ttl: float) -> bool:
        with self.db.write() as conn:
            now = time.time()
            conn.execute("DELETE FROM soloist_slots WHERE key = ? AND expires_at <= ?", (key, now))
            (held,) = conn.execute(
                "SELECT count(*) FROM soloist_slots WHERE key = ? AND holder != ?",
                (key, holder),
            ).fetchone()
            if held >= limit:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO soloist_slots (key, holder, expires_at) VALUES (?, ?, ?)",
                (key, holder, now + ttl),
            )
            return True

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        with self.db.write() as conn:
            now = time.time()
            conn.executemany(
                "UPDATE soloist_slots SET expires_at = ?"
                " WHERE key = ? AND holder = ? AND expires_at > ?",
                [(now + ttl, key, holder, now) for key, holder in slots],
            )

    def release_slot(self, key: str, holder: str) -> None:
        self.db.connection().execute(
            "DELETE FROM soloist_slots WHERE key = ? AND holder = ?", (key, holder)
        )

    def close(self) -> None:
        self.db.close()


def _chord_add(
    conn: sqlite3.Connection,
    chord_id: str,
    index: int,
    size: int,
    record: bytes,
    now: float,
    ttl: float,
) -> list[bytes] | None:
    """One member of `chord_add_many`, in the caller's transaction."""
    row = conn.execute(
        "SELECT added, last, expires_at FROM soloist_chords WHERE chord_id = ?",
        (chord_id,),
    ).fetchone()
    if row is not None and row[2] <= now:  # an expired chord of the same id
        conn.execute("DELETE FROM soloist_chord_members WHERE chord_id = ?", (chord_id,))
        row = None
    added, last = (0, -1) if row is None else (row[0], row[1])
    fresh = conn.execute(
        "INSERT OR IGNORE INTO soloist_chord_members (chord_id, idx, body) VALUES (?, ?, ?)",
        (chord_id, index, record),
    ).rowcount
    if fresh:
        added += 1
        if added == size:
            last = index
    conn.execute(
        "INSERT OR REPLACE INTO soloist_chords (chord_id, added, last, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (chord_id, added, last, now + ttl),
    )
    if last != index:
        return None
    rows = conn.execute(
        "SELECT body FROM soloist_chord_members WHERE chord_id = ? ORDER BY idx",
        (chord_id,),
    ).fetchall()
    return [r[0] for r in rows]
