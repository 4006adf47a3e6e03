"""The link to one Redis server (or a Sentinel-watched master, or a Cluster): URL options,
a pool of connections, reconnects with back-off, and the layout's schema version check.
The broker and the result store both talk to Redis through it; their Lua scripts run over
it (redis_script.py)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from ..errors import BrokerUnavailable, ConfigurationError
from ..urls import passwords, redact, scrub
from .base import (
    positive_int,
    seconds,
    url_options,
    whole,
)

try:
    import hiredis
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisClusterException, SlotNotCoveredError
    from redis.retry import Retry

    from .cluster import SCHEMES as CLUSTER_SCHEMES
    from .cluster import ClusterLink, cluster_client, tagged
    from .redis_script import Script
    from .sentinel import SCHEMES as SENTINEL_SCHEMES
    from .sentinel import sentinel_pool
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigurationError(
        "the Redis broker needs redis-py: pip install 'soloist[redis]'"
    ) from exc


T = TypeVar("T")

log = logging.getLogger("soloist.redis")

DEFAULT_PREFIX = "soloist:"
#: A Redis restart with a large append-only file takes seconds; give it this long before
#: a call gives up with BrokerUnavailable (`?reconnect_timeout=` changes it).
DEFAULT_RECONNECT_TIMEOUT = 20.0
#: With ?wait_replicas=N, how long a write waits for its replicas (`?wait_timeout=`).
DEFAULT_WAIT_TIMEOUT = 1.0


#: The options of ours a redis:// URL may carry; the rest of its query goes to redis-py.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "prefix": str,
    "max_deliveries": positive_int,
    "reconnect_timeout": seconds,
    "wait_replicas": whole(0),
    "wait_timeout": seconds,
}
#: Reads that take longer than this mean a dead connection (`?socket_timeout=`).
DEFAULT_SOCKET_TIMEOUT = 5.0
#: Redis ends a BLPOP that timed out on its next event-loop pass, which on an idle server
#: comes up to 1/hz late (100 ms at the default hz of 10). A blocking command leaves this
#: much of the socket timeout spare, with room for a busy machine.
_LATE_UNBLOCK = 0.25
#: Errors that mean "not reachable right now": worth reconnecting for (on a cluster, also
#: a slot without a node while a failover runs).
_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def pack(commands: Sequence[tuple[object, ...]]) -> list[bytes]:
    """`commands` as a Connection's `send_packed_command` takes them: hiredis's packer
    straight, at a quarter of the cost of the Connection's own `pack_commands` (which
    checks and converts each argument in Python first). Every call to Redis pays it. One
    piece: one write (a piece is one sendall)."""
    if len(commands) == 1:
        return [cast(bytes, hiredis.pack_command(cast(Any, commands[0])))]
    return [b"".join([hiredis.pack_command(cast(Any, c)) for c in commands])]


class RedisConnection:
    """A pooled redis-py client that rides out restarts and connection drops.

    A call that fails because Redis cannot be reached is retried with back-off for up to
    `reconnect_timeout` seconds, logged once per outage, then raised as BrokerUnavailable.
    Until the first call succeeds nothing is retried, so a wrong URL fails at once. The
    client and its pool are thread-safe: a worker's fetch and its keeper share them.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
            raise ConfigurationError(f"not a Redis URL: {redact(url)}")
        # The rest of the query is redis-py's (socket_timeout, ssl_ca_certs, ...).
        client_url, self.options = url_options(url, OPTIONS, others=True)
        self.redacted = redact(url)
        self._secrets = passwords(url)
        self.prefix = self.options.get("prefix", DEFAULT_PREFIX)
        self.reconnect_timeout = self.options.get("reconnect_timeout", DEFAULT_RECONNECT_TIMEOUT)
        #: ?wait_replicas=N: publishes and settles WAIT for N replicas (Script).
        self.wait_replicas = self.options.get("wait_replicas", 0)
        self.wait_timeout = self.options.get("wait_timeout", DEFAULT_WAIT_TIMEOUT)
        try:
            connection: dict[str, Any] = {
                "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
                "socket_connect_timeout": DEFAULT_SOCKET_TIMEOUT,
                "socket_keepalive": True,
                "retry": Retry(NoBackoff(), 0),  # this class does the retrying
            }
            #: On a Cluster, every script call names the hash tag of its keys (cluster.py).
            self.cluster = parts.scheme in CLUSTER_SCHEMES
            rest: dict[str, str] = {}
            if parts.scheme in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
                # These URLs name no one server: of the rest, socket_timeout only.
                rest = dict(parse_qsl(urlsplit(client_url).query))
                if "socket_timeout" in rest:
                    connection["socket_timeout"] = seconds(rest.pop("socket_timeout"))
            if self.cluster:
                if self.wait_replicas:
                    raise ConfigurationError(
                        f"wait_replicas is not supported on a Cluster: {self.redacted}"
                    )
                #: The Cluster's client, made on first use: redis-py's asks a node for the
                #: slots as it is made, and nothing here connects before the first call.
                self._cluster_client = cluster_client(parts, rest, **connection)
                self._cluster_link = ClusterLink()
                self._client: Any = None
            else:
                if parts.scheme in SENTINEL_SCHEMES:
                    for name in rest:
                        raise ConfigurationError(f"unknown option {name} in {self.redacted}")
                    pool = sentinel_pool(parts, **connection)
                else:
                    pool = redis.ConnectionPool.from_url(client_url, **connection)
                    # Made, not connected: redis-py takes an option it does not know only here.
                    pool.connection_class(**pool.connection_kwargs)
                    connection = pool.connection_kwargs
                self._client = redis.Redis(connection_pool=pool)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {self.redacted}: {self._scrub(exc)}") from None
        #: A blocking command must return before the socket timeout calls the link dead.
        socket_timeout = float(connection["socket_timeout"])
        self.max_block = max(min(0.8 * socket_timeout, socket_timeout - _LATE_UNBLOCK), 0.001)
        self._lock = threading.Lock()
        self._connected = False
        #: The (part, version) of Soloist's layout this prefix must hold, until checked
        #: (`require_schema`); None for a layout that is not Soloist's (the Celery bridge's).
        self._schema: tuple[str, int] | None = None
        self._schema_lock = threading.Lock()
        self._down_since: float | None = None
        #: redis-py Connections (untyped) taken from the pool and kept for `execute`.
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def _scrub(self, exc: BaseException) -> str:
        return scrub(str(exc), self._secrets)

    @property
    def client(self) -> Any:
        """The redis-py client: a Redis, or on a Cluster a RedisCluster."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._cluster_client()
                    except RedisClusterException as exc:  # no node answered
                        raise redis.ConnectionError(str(exc)) from None
        return self._client

    def key(self, tag: str, name: str) -> str:
        """The key `name` (after the prefix) of the keys tagged `tag`: on a Cluster under
        the tag's prefix (cluster.py), on one server the same key as ever."""
        return (tagged(self.prefix, tag) if self.cluster else self.prefix) + name

    def script(self, source: str, *, allow_oom: bool = False, replicated: str = "") -> Script:
        """A script, refused whole at `maxmemory` unless `allow_oom` (for one that frees
        memory or only moves what is there: settling must go on while Redis is full)."""
        return Script(self, source, allow_oom, replicated)

    def check_server(self) -> None:
        """Refuse a server older than Redis 7 (the scripts carry its flags) or one that may
        evict keys (it drops messages without a trace)."""
        try:
            infos = self.call(self._infos)
        except BrokerUnavailable as exc:
            log.warning("cannot read the INFO of %s: %s", self.redacted, exc)
            return
        for fields in infos:
            self._check_info(fields)

    def _infos(self) -> list[dict[str, str]]:
        """The INFO fields of the server, or of each master of a Cluster."""
        if self.cluster:
            infos = (self.client.info(target_nodes=n) for n in self.client.get_primaries())
            return [{k: str(v) for k, v in info.items()} for info in infos]
        info = self._command(("INFO",))
        text = info.decode() if isinstance(info, bytes) else str(info)
        return [dict(line.split(":", 1) for line in text.splitlines() if ":" in line)]

    def _check_info(self, fields: dict[str, str]) -> None:
        version = fields.get("redis_version", "7").strip()
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 7:
            raise ConfigurationError(
                f"Redis at {self.redacted} is {version}: Soloist needs Redis 7 or later"
            )
        policy = fields.get("maxmemory_policy", "noeviction").strip()
        if policy.startswith("allkeys"):
            raise ConfigurationError(
                f"Redis at {self.redacted} runs with maxmemory-policy {policy}: at maxmemory"
                " it deletes queued messages without a trace. Set maxmemory-policy noeviction"
            )
        if policy != "noeviction":
            log.warning(
                "Redis at %s runs with maxmemory-policy %s: at maxmemory it may evict stored"
                " results before their ttl (messages are kept). noeviction is safest",
                self.redacted,
                policy,
            )

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` (which talks to Redis), reconnecting through outages."""
        return self.call_resent(fn, *args)[0]

    def require_schema(self, part: str, version: int) -> None:
        """Before the first call, stamp `<prefix>schema` with `part`'s layout `version`
        if it has none, and raise ConfigurationError if it holds another."""
        self._schema = (part, version)

    def _check_schema(self) -> None:
        with self._schema_lock:
            if self._schema is None:
                return  # another thread checked it meanwhile
            part, version = self._schema
            key = f"{self.prefix}schema"
            # Read first: at maxmemory Redis refuses HSETNX even where the field is set.
            replies, _ = self._retrying(self.execute, ("HGET", key, part))
            if replies[0] is None:  # a new prefix (another process may stamp it meanwhile)
                stamp = (("HSETNX", key, part, version), ("HGET", key, part))
                replies, _ = self._retrying(self.execute, *stamp)
                if isinstance(replies[0], redis.OutOfMemoryError) and replies[1] is None:
                    return  # nothing to compare yet, and nothing can be written: next call
            for reply in replies:
                if isinstance(reply, redis.ResponseError):
                    raise BrokerUnavailable(
                        f"Redis at {self.redacted} refused a command: {self._scrub(reply)}"
                    )
            found = replies[-1]
            if found != str(version).encode():
                shown = found.decode(errors="replace") if isinstance(found, bytes) else found
                raise ConfigurationError(
                    f"Redis at {self.redacted} holds {part} keys of schema version {shown} under "
                    f"the prefix {self.prefix!r}; this Soloist reads version {version}"
                )
            self._schema = None

    def call_resent(self, fn: Callable[..., T], *args: Any) -> tuple[T, bool]:
        """`call`, and whether `fn` had to be sent again after a lost connection: then
        Redis may have run an earlier try whose reply never arrived."""
        if self._schema is not None:
            self._check_schema()
        return self._retrying(fn, *args)

    def _retrying(self, fn: Callable[..., T], *args: Any) -> tuple[T, bool]:
        deadline = None
        resent = False
        pause = 0.05
        while True:
            try:
                result = fn(*args)
            except _TRANSIENT as exc:
                now = time.monotonic()
                if not self._connected:
                    raise BrokerUnavailable(
                        f"cannot reach Redis at {self.redacted}: {self._scrub(exc)}"
                    ) from None
                with self._lock:
                    if self._down_since is None:
                        self._down_since = now
                        log.warning(
                            "lost Redis at %s (%s); reconnecting", self.redacted, self._scrub(exc)
                        )
                if deadline is None:
                    deadline = now + self.reconnect_timeout
                if now >= deadline:
                    raise BrokerUnavailable(
                        f"Redis at {self.redacted} unreachable for "
                        f"{self.reconnect_timeout:g}s: {self._scrub(exc)}"
                    ) from None
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 1.0)
                resent = True
                continue
            except redis.RedisError as exc:
                raise BrokerUnavailable(
                    f"Redis at {self.redacted} refused a command: {self._scrub(exc)}"
                ) from None
            if not self._connected or self._down_since is not None:
                with self._lock:
                    self._connected = True
                    if self._down_since is not None:
                        log.warning(
                            "Redis at %s is back after %.1fs",
                            self.redacted,
                            time.monotonic() - self._down_since,
                        )
                        self._down_since = None
            return result, resent

    def command(self, *args: object) -> Any:
        """Run one command, reconnecting through outages; an error reply is raised."""
        return self.call(self._command, args)

    def _command(self, args: tuple[object, ...]) -> Any:
        (reply,) = self.execute(args)
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def execute(self, *commands: tuple[object, ...]) -> list[Any]:
        """Send `commands` in one write and read their replies, in order; a reply that is
        an error comes back as the ResponseError. No retrying (that is `call`'s job).

        This skips redis-py's per-command path (its retry object, observability hooks,
        the pool's lock and checks), which costs about 20 µs of CPU a call: more than most
        scripts take to run. Connections come from redis-py's pool and stay with this
        object, one per concurrent caller (a worker's fetch and its keeper's extend)."""
        if self.cluster:
            return self._cluster_link.execute(self.client, commands)
        if self._pid != os.getpid():
            # A forked child must not share its parent's sockets (the pool resets itself).
            self._idle, self._pid = [], os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.client.connection_pool.get_connection()
        try:
            conn.send_packed_command(pack(commands))
            replies = []
            demoted = False
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
                    demoted = demoted or isinstance(exc, redis.ReadOnlyError)
        except BaseException:
            # A reply may be left unread (a dropped link, a signal's exception): close the
            # link, so the next command cannot read a stale reply as its own.
            self._drop(conn)
            raise
        if demoted:
            self._drop(conn)  # a master demoted by a failover: find the new one
        else:
            self._idle.append(conn)
        return replies

    def drop_idle(self) -> None:
        """Close the connections kept for `execute` (another link to the server broke:
        they may be stale); each connects again when next used."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)

    def _drop(self, conn: Any) -> None:
        """Close `conn` and give it back to the pool, which connects it again before its
        next use: behind Sentinel, to whichever server is master then."""
        conn.disconnect()
        self.client.connection_pool.release(conn)

    @property
    def server(self) -> tuple[object, ...]:
        """Where the connections go: two RedisConnections with one server share its scripts."""
        if self.cluster:
            return ("cluster", self.redacted)
        pool = self.client.connection_pool
        kw = pool.connection_kwargs
        where = tuple(kw.get(k) for k in ("host", "port", "path", "db"))
        return (getattr(pool, "service_name", None), *where)  # a Sentinel pool: no host

    def link(self, tag: str = "") -> Any:
        """A redis-py Connection of the pool's, for a caller that writes and reads it itself:
        on a Cluster, to the node serving `tag`'s keys (`node`)."""
        if not self.cluster:
            return self.client.connection_pool.get_connection()
        return self._node(tag).redis_connection.connection_pool.get_connection()

    def node(self, tag: str) -> str | None:
        """The name of the Cluster node serving `tag`'s keys, in redis-py's slot table
        (None on one server)."""
        return str(self._node(tag).name) if self.cluster else None

    def _node(self, tag: str) -> Any:
        try:
            return self.client.get_node_from_key(tagged(self.prefix, tag))
        except SlotNotCoveredError as exc:  # a node is down: as a lost link
            raise redis.ConnectionError(str(exc)) from None

    def close(self) -> None:
        for conn in self._idle:
            conn.disconnect()
        if self._client is not None:
            self._client.close()
        if not self.cluster:
            self._client.connection_pool.disconnect()
