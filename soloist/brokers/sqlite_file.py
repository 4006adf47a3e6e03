"""One SQLite file as the broker and the result store use it: its URL and options,
per-thread connections tuned for a queue (WAL, busy timeout, errors that say the store is
unavailable), write transactions, and the schema versions of the tables in it."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ..errors import BrokerUnavailable, ConfigurationError
from ..urls import sqlite_file
from .base import positive_int, seconds, url_options


def _synchronous(value: str) -> str:
    if value.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("choose normal or full (or off, extra)")
    return value.upper()


#: What a sqlite:// URL may say; the broker and the result store often share one URL.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "max_deliveries": positive_int,
    "synchronous": _synchronous,
    "busy_timeout": seconds,
}


def path_from_url(url: str) -> tuple[str, dict[str, Any]]:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` -> (path, query options)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    path = sqlite_file(url)
    if not path:
        raise ConfigurationError(f"sqlite URL names no file: {url!r} (e.g. sqlite:///soloist.db)")
    return path, url_options(url, OPTIONS)[1]


#: How long a statement waits for another connection's write lock (`?busy_timeout=`).
DEFAULT_BUSY_TIMEOUT = 60.0


class _Connection(sqlite3.Connection):
    """A connection whose operational errors (locked past the busy timeout, disk or
    database full, I/O errors) are raised as BrokerUnavailable with the cause: the store
    is unavailable, which callers (a worker) ride out instead of crashing."""

    path = ""

    def _unavailable(self, exc: sqlite3.OperationalError) -> BrokerUnavailable:
        return BrokerUnavailable(f"SQLite database {self.path!r} unavailable: {exc}")

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        try:
            return super().executescript(script)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc


#: Which layout each part's tables (the broker's, the result store's) have in a file: a
#: release that changes a part's tables raises its version and migrates from the last.
_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS soloist_schema (part TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


class Database:
    """Per-thread connections to one SQLite file, tuned for a queue. With a `schema`, its
    tables are made if missing, and the file must hold `part`'s tables at `version`."""

    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        schema: str = "",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        part: str = "",
        version: int = 0,
    ) -> None:
        self.busy_timeout = busy_timeout
        self.path = path
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._pid = os.getpid()
        if schema:
            self._check(part, version)
            self.connection().executescript(schema)

    @classmethod
    def at(
        cls, path: str, options: dict[str, Any], schema: str, part: str, version: int
    ) -> Database:
        """The file at `path`, with the URL's `synchronous` and `busy_timeout` options."""
        return cls(
            path,
            options.get("synchronous", "NORMAL"),
            schema,
            options.get("busy_timeout", DEFAULT_BUSY_TIMEOUT),
            part,
            version,
        )

    def _check(self, part: str, version: int) -> None:
        """Stamp a new file with `part`'s `version`; refuse one made with another."""
        with self.write() as conn:
            conn.execute(_VERSIONS)
            conn.execute(
                "INSERT OR IGNORE INTO soloist_schema (part, version) VALUES (?, ?)",
                (part, version),
            )
            (found,) = conn.execute(
                "SELECT version FROM soloist_schema WHERE part = ?", (part,)
            ).fetchone()
        if found != version:
            raise ConfigurationError(
                f"SQLite database {self.path!r} holds {part} tables of schema version {found}; "
                f"this Soloist reads version {version}"
            )

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            # A connection must not cross a fork: the child opens its own.
            self._pid = os.getpid()
            try:
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    timeout=self.busy_timeout,
                    check_same_thread=False,
                    factory=_Connection,
                )
                conn.path = self.path
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            except (sqlite3.Error, BrokerUnavailable) as exc:
                raise BrokerUnavailable(
                    f"cannot open SQLite database {self.path!r}: {exc}"
                ) from None
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A transaction that holds SQLite's single write lock from its first statement."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A COMMIT that failed (busy, disk full) may leave the transaction open.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def data_version(self) -> int:
        return int(self.connection().execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
