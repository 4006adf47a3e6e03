"""The Redis broker: sorted sets moved between by Lua scripts, and BLPOP to sleep on.

The scripts are the .lua files in brokers/redis/; prelude.lua opens with the key schema.

Why Lua and not Streams: a stream has no priorities and no delayed entries, and XACK does
not check which consumer holds an entry, so fencing a stale holder, retrying with a delay
and dead-lettering would need Lua around Streams anyway. Sorted sets give priority-then-
age order and timed visibility directly, and one script per operation keeps each one
atomic.

An idle `fetch` does not poll. Publishing (and anything else that makes a message due)
pushes a token on the queue's wake list when it is empty; idle fetchers block in BLPOP on
the wake lists of their queues, and run the claim script only when a token came, when the
first delayed message or lease of those queues falls due (the claim that found nothing
says when), or every IDLE_RECHECK seconds in case a token was lost. A fetcher that claims
messages and leaves more behind pushes the token on for the next idle worker. So an idle
worker costs Redis one BLPOP per fetch (the worker's fetches last FETCH_WAIT) and a claim
every few seconds: about 5% of the claim-per-fetch design (benchmarks/idle_bench.py); a
wake-up costs two round trips (BLPOP, then the claim) instead of one.

Per message, a claim costs one HMGET and one HSET, and an ack one HMGET (the fencing
check); the sorted-set and key updates of a batch are one variadic call each.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from ..errors import BrokerUnavailable, ConfigurationError
from ..urls import passwords, redact, scrub
from .base import (
    DEFAULT_MAX_DELIVERIES,
    AckPipe,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
    positive_int,
    seconds,
    url_options,
    whole,
)

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError
    from redis.retry import Retry

    from .redis_pipe import RedisAckPipe
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
#: Messages moved, purged or requeued per script call, so no script blocks Redis for long.
CHUNK = 1000
#: Redis ends a BLPOP that timed out on its next event-loop pass, which on an idle server
#: comes up to 1/hz late (100 ms at the default hz of 10). A blocking command leaves this
#: much of the socket timeout spare, with room for a busy machine.
_LATE_UNBLOCK = 0.25
#: An idle fetcher that has seen no wake-up token claims anyway this often: a token can be
#: lost (a worker killed between its BLPOP and its claim), and no other event might come.
IDLE_RECHECK = 10.0
#: Errors that mean "not reachable right now": worth reconnecting for.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
#: The Lua scripts, one file each in brokers/redis/. prelude.lua, which runs before each of
#: them (ARGV[1] is the key prefix), opens with the key schema and defines the key names.
_LUA = Path(__file__).with_name("redis")


def _lua(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()


def queue_key(prefix: str, queue: str, kind: str) -> str:
    """A queue's key of `kind` (ready, delayed, leased, dead, wake, lost): the name
    prelude.lua's qkey() builds, for the commands sent without a script (BLPOP)."""
    return f"{prefix}q:{queue}:{kind}"


_PRELUDE = _lua("prelude")
_PUBLISH = _lua("publish")
_CLAIM = _lua("claim").replace("$CHUNK", str(CHUNK))
_ACK = _lua("ack")
_RETRY = _lua("retry")
_DEAD_LETTER = _lua("dead_letter")
_RELEASE = _lua("release")
_EXTEND = _lua("extend")
_DEPTH = _lua("depth")
_STATS = _lua("stats")
_PURGE = _lua("purge").replace("$CHUNK", str(CHUNK))
_DEAD_LETTERS = _lua("dead_letters")
_SETTLE_DEAD = _lua("settle_dead").replace("$CHUNK", str(CHUNK))
_HEARTBEAT = _lua("heartbeat")
_WORKERS = _lua("workers")
_FORGET_WORKER = _lua("forget_worker")

#: `poison_reason` as a Lua format string, so burying a poison message stays one script.
_POISON_FORMAT = poison_reason(987654321).replace("%", "%%").replace("987654321", "%d")


class RedisConnection:
    """A pooled redis-py client that rides out restarts and connection drops.

    A call that fails because Redis cannot be reached is retried with back-off for up to
    `reconnect_timeout` seconds, logged once per outage, then raised as BrokerUnavailable.
    Until the first call succeeds nothing is retried, so a wrong URL fails at once. The
    client and its pool are thread-safe: a worker's fetch and its keeper share them.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", *SENTINEL_SCHEMES):
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
            if parts.scheme in SENTINEL_SCHEMES:
                # A Sentinel URL names no server of its own: of the rest, socket_timeout only.
                rest = dict(parse_qsl(urlsplit(client_url).query))
                if "socket_timeout" in rest:
                    connection["socket_timeout"] = seconds(rest.pop("socket_timeout"))
                for name in rest:
                    raise ConfigurationError(f"unknown option {name} in {self.redacted}")
                pool = sentinel_pool(parts, **connection)
            else:
                pool = redis.ConnectionPool.from_url(client_url, **connection)
                # Made, not connected: redis-py takes an option it does not know only here.
                pool.connection_class(**pool.connection_kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL {self.redacted}: {self._scrub(exc)}") from None
        self.client = redis.Redis(connection_pool=pool)
        #: A blocking command must return before the socket timeout calls the link dead.
        socket_timeout = float(pool.connection_kwargs["socket_timeout"])
        self.max_block = max(min(0.8 * socket_timeout, socket_timeout - _LATE_UNBLOCK), 0.001)
        self._lock = threading.Lock()
        self._connected = False
        self._down_since: float | None = None
        #: redis-py Connections (untyped) taken from the pool and kept for `execute`.
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def _scrub(self, exc: BaseException) -> str:
        return scrub(str(exc), self._secrets)

    def script(self, source: str, *, allow_oom: bool = False, replicated: str = "") -> Script:
        """A script, refused whole at `maxmemory` unless `allow_oom` (for one that frees
        memory or only moves what is there: settling must go on while Redis is full)."""
        return Script(self, source, allow_oom, replicated)

    def check_server(self) -> None:
        """Refuse a server older than Redis 7 (the scripts carry its flags) or one that may
        evict keys (it drops messages without a trace)."""
        try:
            info = self.command("INFO")
        except BrokerUnavailable as exc:
            log.warning("cannot read the INFO of %s: %s", self.redacted, exc)
            return
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
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

    def call_resent(self, fn: Callable[..., T], *args: Any) -> tuple[T, bool]:
        """`call`, and whether `fn` had to be sent again after a lost connection: then
        Redis may have run an earlier try whose reply never arrived."""
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
        if self._pid != os.getpid():
            # A forked child must not share its parent's sockets (the pool resets itself).
            self._idle, self._pid = [], os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.client.connection_pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            # A reply may be left unread (a dropped link, a signal's exception): close the
            # link, so the next command cannot read a stale reply as its own.
            self._drop(conn)
            raise
        if any(isinstance(r, redis.ReadOnlyError) for r in replies):
            self._drop(conn)  # a master demoted by a failover: find the new one
        else:
            self._idle.append(conn)
        return replies

    def _drop(self, conn: Any) -> None:
        """Close `conn` and give it back to the pool, which connects it again before its
        next use: behind Sentinel, to whichever server is master then."""
        conn.disconnect()
        self.client.connection_pool.release(conn)

    @property
    def server(self) -> tuple[object, ...]:
        """Where the connections go: two RedisConnections with one server share its scripts."""
        pool = self.client.connection_pool
        kw = pool.connection_kwargs
        where = tuple(kw.get(k) for k in ("host", "port", "path", "db"))
        return (getattr(pool, "service_name", None), *where)  # a Sentinel pool: no host

    def link(self) -> Any:
        """A redis-py Connection of the pool's, for a caller that writes and reads it itself."""
        return self.client.connection_pool.get_connection()

    def close(self) -> None:
        for conn in self._idle:
            conn.disconnect()
        self.client.close()
        self.client.connection_pool.disconnect()


class Script:
    """A Lua script run by its SHA1, and loaded again when the server lost it (a restart).

    Calling it passes the key prefix as ARGV[1], then the arguments given, and reconnects
    through outages like every other call."""

    def __init__(
        self, conn: RedisConnection, source: str, allow_oom: bool = False, replicated: str = ""
    ) -> None:
        self.conn = conn
        # Redis 7 script flags: without allow-oom a script is refused at maxmemory.
        self.source = ("#!lua flags=allow-oom\n" if allow_oom else "#!lua\n") + _PRELUDE + source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self._head = ("EVALSHA", self.sha, 0, conn.prefix)
        #: With ?wait_replicas=N, what this script's writes are ("a publish", "a settle"):
        #: WAIT N follows it in the same write, so it covers this connection's writes.
        self._wait: tuple[tuple[object, ...], ...] = ()
        if replicated and conn.wait_replicas:
            self._wait = (("WAIT", conn.wait_replicas, max(int(conn.wait_timeout * 1000), 1)),)
        self._replicated = replicated

    def __call__(self, *args: object) -> Any:
        return self.conn.call(self._run, (), args)

    def command(self, *args: object) -> tuple[object, ...]:
        """The EVALSHA command calling it with `args`, to write on a connection directly."""
        return (*self._head, *args)

    def resent(self, *args: object) -> tuple[Any, bool]:
        """Call it; also whether it was sent again after a lost connection (`call_resent`)."""
        return self.conn.call_resent(self._run, (), args)

    def after(self, command: tuple[object, ...], *args: object) -> Any:
        """Run `command`, then this script, in one round trip: Redis runs the script the
        moment the command is done (a blocking one too). Returns the script's reply."""
        return self.conn.call(self._run, (command,), args)

    def _run(self, before: tuple[tuple[object, ...], ...], args: tuple[object, ...]) -> Any:
        evalsha = (*self._head, *args)
        replies = self.conn.execute(*before, evalsha, *self._wait)
        at = len(before)
        if isinstance(replies[at], NoScriptError):
            self.conn.execute(("SCRIPT", "LOAD", self.source))
            replies[at:] = self.conn.execute(evalsha, *self._wait)
        for r in replies:
            if isinstance(r, redis.ResponseError):
                raise r
        if self._wait:
            self._check_replicas(replies[-1])
        return replies[at]

    def _check_replicas(self, acked: object) -> None:
        """A publish not on `wait_replicas` replicas in time raises (the producer may send
        it again); a settle only warns (it stands on the master, and sending it again would
        find its message gone)."""
        wanted = self.conn.wait_replicas
        if isinstance(acked, int) and acked >= wanted:
            return
        what = f"{self._replicated} reached {acked} of {wanted} replicas of {self.conn.redacted}"
        if self._replicated == "a publish":
            raise BrokerUnavailable(f"{what}: it may be lost in a failover")
        log.warning("%s: a failover now may undo it", what)


class RedisBroker(Broker):
    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        self.redis = RedisConnection(url)
        self.prefix = self.redis.prefix
        self.max_deliveries = self.redis.options.get("max_deliveries", max_deliveries)
        script = self.redis.script
        self._publish = script(_PUBLISH, replicated="a publish")
        self._claim = script(_CLAIM)
        self._ack = script(_ACK, allow_oom=True, replicated="a settle")
        self._retry = script(_RETRY, allow_oom=True, replicated="a settle")
        self._dead_letter = script(_DEAD_LETTER, allow_oom=True, replicated="a settle")
        self._release = script(_RELEASE, allow_oom=True)
        self._extend = script(_EXTEND, allow_oom=True)
        self._depth = script(_DEPTH, allow_oom=True)
        self._stats = script(_STATS, allow_oom=True)
        self._purge = script(_PURGE, allow_oom=True)
        self._dead_letters = script(_DEAD_LETTERS, allow_oom=True)
        self._settle_dead = script(_SETTLE_DEAD, allow_oom=True)
        self._heartbeat = script(_HEARTBEAT, allow_oom=True)
        self._workers = script(_WORKERS, allow_oom=True)
        self._forget_worker = script(_FORGET_WORKER, allow_oom=True)
        #: Queues (as fetched together) -> monotonic time before which nothing of theirs
        #: is claimable unless a wake-up token comes (a fetch found nothing).
        self._quiet: dict[tuple[str, ...], float] = {}

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        (mid,) = self._publish(queue, body, max(delay, 0), int(priority))
        return str(mid.decode())

    def publish_many(self, items: Sequence[tuple[str, bytes, float, int]]) -> list[str]:
        """Publish (queue, body, delay, priority) items, up to CHUNK per round trip."""
        ids: list[str] = []
        for start in range(0, len(items), CHUNK):
            args: list[object] = []
            for queue, body, delay, priority in items[start : start + CHUNK]:
                args += (queue, body, max(delay, 0), int(priority))
            ids += (i.decode() for i in self._publish(*args))
        return ids

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        """Claim; when nothing is claimable, block on the wake lists and claim again only
        when a token comes or a delayed message or lease falls due (see the module doc)."""
        start = time.monotonic()
        deadline = start + timeout
        receipt = secrets.token_hex(8)
        args = (max(max_count, 1), lease, receipt, self.max_deliveries, _POISON_FORMAT, *queues)
        key = tuple(queues)
        # A fetch that waits may skip its first claim when the last one found nothing and
        # nothing has fallen due since: whatever arrived meanwhile pushed a token.
        quiet_until = self._quiet.pop(key, 0.0)
        reply = None if timeout > 0 and start < quiet_until else self._claim(*args)
        wake = tuple(queue_key(self.prefix, q, "wake") for q in queues)
        while reply is None or len(reply) == 1:
            now = time.monotonic()
            if reply is not None:
                due_in = reply[0] / 1000 if reply[0] >= 0 else math.inf
                quiet_until = now + min(due_in, IDLE_RECHECK)
            if now >= deadline:
                self._quiet[key] = quiet_until
                return []
            wait = min(deadline - now, self.redis.max_block, quiet_until - now)
            # Whole milliseconds, never 0: BLPOP reads a 0 timeout as "wait forever".
            block = max(math.ceil(wait * 1000), 1) / 1000
            token = self.redis.command("BLPOP", *wake, block)
            claim = token is not None or time.monotonic() >= quiet_until
            reply = self._claim(*args) if claim else None
        return [
            Delivery(rid.decode(), queue.decode(), body, count, retries, receipt)
            for rid, queue, body, count, retries in zip(*[iter(reply[1:])] * 5, strict=True)
        ]

    def ack(self, delivery: Delivery) -> bool:
        return self.ack_many([delivery])[0]

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """One script call per CHUNK deliveries.

        A call sent again after a lost connection may find its messages gone: the first
        try ran and its reply was lost. Those count as acked (the message is gone for
        good, which is what an ack asks); a first try that finds one gone was too late."""
        acked: list[bool] = []
        for start in range(0, len(deliveries), CHUNK):
            reply, resent = self._ack.resent(*_pairs(deliveries[start : start + CHUNK]))
            acked += (n == 1 or (n == 2 and resent) for n in reply)
        return acked

    def ack_pipe(self, results: object) -> AckPipe | None:
        """Acks pipelined on a connection of their own; with them the records of a Redis
        result store on the same server (its `put_call`), in one transaction each."""
        put = getattr(results, "put_call", None)
        store = getattr(results, "redis", None)
        same = isinstance(store, RedisConnection) and store.server == self.redis.server
        if self.redis.wait_replicas:
            return None  # each settle WAITs for the replicas: no pipelining
        return RedisAckPipe(self.redis, self._ack, put if same else None)

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        return _settled(
            *self._retry.resent(delivery.id, delivery.receipt, max(delay, 0), int(counted))
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return _settled(*self._dead_letter.resent(delivery.id, delivery.receipt, reason))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._release(*_pairs(deliveries))

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        if not deliveries:
            return []
        lost = self._extend(lease, *_pairs(deliveries))
        return [d for d, gone in zip(deliveries, lost, strict=True) if gone]

    def depth(self, queue: str) -> int:
        return int(self._depth(queue))

    def stats(self, queue: str) -> QueueStats:
        return QueueStats(*(int(n) for n in self._stats(queue)))

    def check(self) -> None:
        self.redis.check_server()

    def purge(self, queue: str) -> int:
        total = 0
        while True:
            dropped = int(self._purge(queue))
            total += dropped
            if dropped < CHUNK:
                return total

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        reply = self._dead_letters(queue, limit)
        return [
            DeadLetter(
                rid.decode(), queue, body, reason.decode(), int(count), int(retries), float(t)
            )
            for rid, body, reason, count, retries, t in zip(*[iter(reply)] * 6, strict=True)
        ]

    def _settle_dead_letters(self, queue: str, requeue: bool, ids: Sequence[str] | None) -> int:
        flag = int(requeue)
        if ids is None:
            total = 0
            while True:
                moved = int(self._settle_dead(queue, flag))
                total += moved
                if moved < CHUNK:
                    return total
        return sum(
            int(self._settle_dead(queue, flag, *ids[i : i + CHUNK]))
            for i in range(0, len(ids), CHUNK)
        )

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle_dead_letters(queue, True, ids)

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle_dead_letters(queue, False, ids)

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self._heartbeat(worker_id, info, max(math.ceil(ttl * 1000), 1))

    def workers(self) -> dict[str, tuple[bytes, float]]:
        reply = self._workers()
        return {
            wid.decode(): (info, float(seen))
            for wid, info, seen in zip(*[iter(reply)] * 3, strict=True)
        }

    def forget_worker(self, worker_id: str) -> None:
        self._forget_worker(worker_id)

    def close(self) -> None:
        self.redis.close()


def _settled(reply: int, resent: bool) -> bool:
    """A retry or dead-letter script's reply: 1 done; 2 already settled and leased to
    nobody, which after a lost reply was this call's own earlier try (as for `ack_many`)."""
    return reply == 1 or (reply == 2 and resent)


def _pairs(deliveries: Sequence[Delivery]) -> list[object]:
    return [x for d in deliveries for x in (d.id, d.receipt)]
