# Key schema. Every key starts with the prefix (`soloist:` unless the URL says `?prefix=`).
#
#   ids                  STRING  counter behind message ids (INCR); an id is the counter,
#                                zero-padded to 15 digits, so ids sort by age as strings
#   m:<id>               HASH    one message: q queue, b body, p priority, n delivery count,
#                                a retries, r receipt of its current lease ("" when none);
#                                a dead letter also has why (reason) and t (dead_at). n and
#                                r are absent until the message is first claimed (read: 0, "")
#   q:<queue>:ready      ZSET    due messages: score -priority, member id (equal scores sort
#                                by member, that is by age)
#   q:<queue>:delayed    ZSET    messages not due yet: score = unix time they fall due
#   q:<queue>:leased     ZSET    messages handed out: score = unix time the lease lapses
#   q:<queue>:dead       ZSET    dead letters: score = unix time they died
#   q:<queue>:wake       LIST    at most one wake-up token; idle fetchers block on it (BLPOP)
#   q:<queue>:lost       STRING  messages a claim found without their hash: evicted, which
#                                only an evicting maxmemory-policy does (workers refuse one)
#   workers              ZSET    worker id -> unix time its heartbeat expires
#   w:<worker id>        HASH    info, seen; expires with the heartbeat
#
# A message is always in exactly one of ready, delayed, leased or dead (a lapsed lease
# stays in leased until a claim moves it back to ready). Every change of place is one Lua
# script, so it is atomic, and every script reads the clock of the Redis server, so
# workers on machines with skewed clocks agree on when leases lapse.
#
# Memory: scripts that grow the data (publish, claim) carry no `allow-oom` flag, so at
# `maxmemory` Redis refuses them whole, before they change anything: no task is started
# whose result could not be stored. Settling, renewing leases and reading are flagged
# `allow-oom`: they free memory or move a message, and must go on while it is full.

"""The Redis broker: sorted sets moved between by Lua scripts, and BLPOP to sleep on.

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


def _replicas(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


#: The options of ours a redis:// URL may carry; the rest of its query goes to redis-py.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "prefix": str,
    "max_deliveries": positive_int,
    "reconnect_timeout": seconds,
    "wait_replicas": _replicas,
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

# Shared by every script: ARGV[1] is the key prefix.
_PRELUDE = """
local prefix = ARGV[1]
-- The server's clock, read once, by the scripts that need it: TIME is a call of its own.
local clock
local function now()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return clock
end
local function qkey(queue, kind) return prefix .. 'q:' .. queue .. ':' .. kind end
local function mkey(id) return prefix .. 'm:' .. id end
local function wake(queue)
  local key = qkey(queue, 'wake')
  if redis.call('LLEN', key) == 0 then redis.call('LPUSH', key, 1) end
end
local function make_ready(queue, id)
  local p = tonumber(redis.call('HGET', mkey(id), 'p'))
  if p then redis.call('ZADD', qkey(queue, 'ready'), -p, id) end
end
local function unplace(queue, id)
  redis.call('ZREM', qkey(queue, 'ready'), id)
  redis.call('ZREM', qkey(queue, 'delayed'), id)
  redis.call('ZREM', qkey(queue, 'leased'), id)
end
local function bury(queue, id, reason)
  unplace(queue, id)
  redis.call('HSET', mkey(id), 'r', '', 'why', reason, 't', now())
  redis.call('ZADD', qkey(queue, 'dead'), now(), id)
end
-- `command` on `key` (none if false) with the items of `list` as further arguments, in
-- slices: unpack fails past Lua's C stack (about 8000 values). Returns the replies' sum.
local function variadic(command, key, list)
  local total = 0
  for i = 1, #list, 4000 do
    local last = math.min(i + 3999, #list)
    if key then
      total = total + redis.call(command, key, unpack(list, i, last))
    else
      total = total + redis.call(command, unpack(list, i, last))
    end
  end
  return total
end
-- For a settle that found its lease gone: 2 if the message is settled and leased to
-- nobody (this settle's earlier try may have done it, its reply lost), else 0.
local function unleased(id)
  if redis.call('HGET', mkey(id), 'r') == '' then return 2 end
  return 0
end
-- The queue of message `id` if `receipt` is its current lease, else nil.
local function held(id, receipt)
  local m = redis.call('HMGET', mkey(id), 'r', 'q')
  if m[1] == receipt then return m[2] end
  return nil
end
"""

# ARGV: prefix, then queue, body, delay, priority for each message. Returns the ids.
_PUBLISH = """
local ids = {}
for i = 2, #ARGV, 4 do
  local queue, delay, priority = ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local id = string.format('%015d', redis.call('INCR', prefix .. 'ids'))
  -- n and r are left out until the first claim (absent reads as 0 and ""); the claim
  -- returns a as it is, so it is written.
  redis.call('HSET', mkey(id), 'q', queue, 'b', ARGV[i + 1], 'p', priority, 'a', 0)
  if delay > 0 then
    redis.call('ZADD', qkey(queue, 'delayed'), now() + delay, id)
  else
    redis.call('ZADD', qkey(queue, 'ready'), -priority, id)
  end
  -- Wakes a sleeper for a delayed message too, so it shortens its sleep to the new due time.
  wake(queue)
  ids[#ids + 1] = id
end
return ids
"""

# ARGV: prefix, max_count, lease, receipt, max_deliveries, poison reason format, queues...
# Returns {wait_ms, id, queue, body, delivery_count, retries, id, ...}; wait_ms, when
# nothing was claimed, is how long until a delayed message or lease of these queues falls
# due (-1: none).
_CLAIM = """
local want, lease, receipt = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local max_deliveries, poison = tonumber(ARGV[5]), ARGV[6]
local out, got = {0}, 0
-- Queues whose ready set this claim emptied: no ZCARD needed to know they need no wake.
local emptied = {}
local function promote(queue, kind)
  local key = qkey(queue, kind)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now(), 'LIMIT', 0, $CHUNK)
  for _, id in ipairs(due) do
    redis.call('ZREM', key, id)
    make_ready(queue, id)
  end
end
for i = 7, #ARGV do
  if got >= want then break end
  local queue = ARGV[i]
  local ready = qkey(queue, 'ready')
  local claimed = {}
  promote(queue, 'delayed')
  promote(queue, 'leased')
  local drained = false
  while got < want and not drained do
    local popped = redis.call('ZPOPMIN', ready, want - got)
    -- Fewer than asked for: ready is empty, so do not ask again.
    drained = #popped < 2 * (want - got)
    for j = 1, #popped, 2 do
      local id = popped[j]
      local m = mkey(id)
      -- Deliveries so far, body, retries; all false if the hash is gone (evicted: Redis
      -- must run with maxmemory-policy noeviction).
      local msg = redis.call('HMGET', m, 'n', 'b', 'a')
      local seen = tonumber(msg[1]) or 0
      -- A message back from a lapsed lease goes out alone (see base.Broker.fetch).
      if got >= want or (seen > 0 and got > 0) then
        local back = {}
        for k = j, #popped, 2 do
          back[#back + 1] = popped[k + 1]
          back[#back + 1] = popped[k]
        end
        variadic('ZADD', ready, back)
        want = got
        drained = false
        break
      end
      if seen > 0 then want = got + 1 end
      if not msg[2] then
        -- Nothing left to deliver: counted, for operators (`stats`).
        redis.call('INCR', qkey(queue, 'lost'))
      elseif seen >= max_deliveries then
        redis.call('HSET', m, 'n', seen + 1)
        bury(queue, id, string.format(poison, seen))
      else
        redis.call('HSET', m, 'n', seen + 1, 'r', receipt)
        claimed[#claimed + 1] = id
        out[#out + 1] = id
        out[#out + 1] = queue
        out[#out + 1] = msg[2]
        out[#out + 1] = seen + 1
        out[#out + 1] = tonumber(msg[3]) or 0
        got = got + 1
      end
    end
  end
  emptied[queue] = drained
  -- Newest first. A small sorted set is a flat list that ZADD scans for each insert, from
  -- the lowest score, parsing each float score as text. These all share one score and
  -- would go in after each other, so in id order each insert scans the whole batch (about
  -- 10 µs a message for 100); in reverse, each goes in at the front of the others.
  local leases = {}
  for k = #claimed, 1, -1 do
    leases[#leases + 1] = now() + lease
    leases[#leases + 1] = claimed[k]
  end
  variadic('ZADD', qkey(queue, 'leased'), leases)
end
local next_due = nil
for i = 7, #ARGV do
  local queue = ARGV[i]
  if not emptied[queue] and redis.call('ZCARD', qkey(queue, 'ready')) > 0 then wake(queue) end
  if got == 0 then
    for _, kind in ipairs({'delayed', 'leased'}) do
      local first = redis.call('ZRANGE', qkey(queue, kind), 0, 0, 'WITHSCORES')
      if first[2] and (next_due == nil or tonumber(first[2]) < next_due) then
        next_due = tonumber(first[2])
      end
    end
  end
end
if got == 0 then
  out[1] = next_due and math.max(math.ceil((next_due - now()) * 1000), 1) or -1
end
return out
""".replace("$CHUNK", str(CHUNK))

# ARGV: prefix, then id, receipt for each delivery. Returns, for each, 1 if acked, 0 if
# another lease holds it, 2 if it is gone (acked already).
_ACK = """
local acked, ids_of, keys, done = {}, {}, {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local queue = held(id, ARGV[i + 1])
  if queue and not done[id] then
    done[id] = true
    ids_of[queue] = ids_of[queue] or {}
    table.insert(ids_of[queue], id)
    keys[#keys + 1] = mkey(id)
    acked[#acked + 1] = 1
  elseif redis.call('EXISTS', mkey(id)) == 0 then
    acked[#acked + 1] = 2
  else
    acked[#acked + 1] = 0
  end
end
for queue, ids in pairs(ids_of) do
  -- A held message is leased, or back in ready if its lease lapsed and a claim moved it
  -- there without taking it.
  if variadic('ZREM', qkey(queue, 'leased'), ids) < #ids then
    variadic('ZREM', qkey(queue, 'ready'), ids)
    variadic('ZREM', qkey(queue, 'delayed'), ids)
  end
end
variadic('DEL', false, keys)
return acked
"""

# ARGV: prefix, id, receipt, delay, retries to add (1, or 0 for a deferral). Returns 1, or
# `unleased` when not held.
_RETRY = """
local id, delay = ARGV[2], tonumber(ARGV[4])
local queue = held(id, ARGV[3])
if not queue then return unleased(id) end
unplace(queue, id)
redis.call('HSET', mkey(id), 'r', '', 'n', 0)
redis.call('HINCRBY', mkey(id), 'a', ARGV[5])
if delay > 0 then
  redis.call('ZADD', qkey(queue, 'delayed'), now() + delay, id)
else
  make_ready(queue, id)
end
wake(queue)
return 1
"""

# ARGV: prefix, id, receipt, reason. Returns 1, or `unleased` when not held.
_DEAD_LETTER = """
local queue = held(ARGV[2], ARGV[3])
if not queue then return unleased(ARGV[2]) end
bury(queue, ARGV[2], ARGV[4])
return 1
"""

# ARGV: prefix, then id, receipt for each delivery.
_RELEASE = """
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local queue = held(id, ARGV[i + 1])
  if queue then
    unplace(queue, id)
    redis.call('HSET', mkey(id), 'r', '')
    redis.call('HINCRBY', mkey(id), 'n', -1)
    make_ready(queue, id)
    wake(queue)
  end
end
return 0
"""

# ARGV: prefix, lease, then id, receipt for each delivery. Returns 1 for each one lost.
_EXTEND = """
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local queue = held(id, ARGV[i + 1])
  if queue then
    -- A lapsed lease that nobody claimed yet may sit in ready: take it back.
    redis.call('ZREM', qkey(queue, 'ready'), id)
    redis.call('ZADD', qkey(queue, 'leased'), now() + tonumber(ARGV[2]), id)
    lost[#lost + 1] = 0
  else
    lost[#lost + 1] = 1
  end
end
return lost
"""

# ARGV: prefix, queue.
_DEPTH = """
local queue = ARGV[2]
return redis.call('ZCARD', qkey(queue, 'ready')) + redis.call('ZCARD', qkey(queue, 'delayed'))
  + redis.call('ZCOUNT', qkey(queue, 'leased'), '-inf', now())
"""

# ARGV: prefix, queue. Returns {depth, delayed, in flight, dead letters, lost}.
_STATS = """
local queue = ARGV[2]
local delayed = redis.call('ZCOUNT', qkey(queue, 'delayed'), '(' .. now(), '+inf')
local in_flight = redis.call('ZCOUNT', qkey(queue, 'leased'), '(' .. now(), '+inf')
local depth = redis.call('ZCARD', qkey(queue, 'ready'))
  + redis.call('ZCARD', qkey(queue, 'delayed'))
  + redis.call('ZCARD', qkey(queue, 'leased')) - in_flight
local lost = tonumber(redis.call('GET', qkey(queue, 'lost'))) or 0
return {depth, delayed, in_flight, redis.call('ZCARD', qkey(queue, 'dead')), lost}
"""

# ARGV: prefix, queue. Drops up to CHUNK waiting messages; returns how many.
_PURGE = """
local queue, room = ARGV[2], $CHUNK
local function drop(kind, ids)
  for _, id in ipairs(ids) do
    redis.call('ZREM', qkey(queue, kind), id)
    redis.call('DEL', mkey(id))
    room = room - 1
  end
end
drop('ready', redis.call('ZRANGE', qkey(queue, 'ready'), 0, room - 1))
if room > 0 then drop('delayed', redis.call('ZRANGE', qkey(queue, 'delayed'), 0, room - 1)) end
if room > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', qkey(queue, 'leased'), '-inf', now(), 'LIMIT', 0, room)
  drop('leased', lapsed)
end
return $CHUNK - room
""".replace("$CHUNK", str(CHUNK))

# ARGV: prefix, queue, limit. Returns {id, body, reason, delivery_count, retries, dead_at, …}.
_DEAD_LETTERS = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', qkey(ARGV[2], 'dead'), 0, tonumber(ARGV[3]) - 1)) do
  local m = redis.call('HMGET', mkey(id), 'b', 'why', 'n', 'a', 't')
  out[#out + 1] = id
  for k = 1, 5 do out[#out + 1] = m[k] end
end
return out
"""

# ARGV: prefix, queue, requeue (1) or drop (0), ids... (none: up to CHUNK of the oldest).
# Returns how many were moved.
_SETTLE_DEAD = """
local queue, requeue = ARGV[2], ARGV[3] == '1'
local dead = qkey(queue, 'dead')
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ARGV < 4 then ids = redis.call('ZRANGE', dead, 0, $CHUNK - 1) end
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', dead, id) == 1 then
    moved = moved + 1
    if requeue then
      redis.call('HSET', mkey(id), 'n', 0, 'a', 0, 'r', '')
      redis.call('HDEL', mkey(id), 'why', 't')
      make_ready(queue, id)
    else
      redis.call('DEL', mkey(id))
    end
  end
end
if requeue and moved > 0 then wake(queue) end
return moved
""".replace("$CHUNK", str(CHUNK))

# ARGV: prefix, worker id, info, ttl in ms.
_HEARTBEAT = """
local key = prefix .. 'w:' .. ARGV[2]
redis.call('HSET', key, 'info', ARGV[3], 'seen', now())
redis.call('PEXPIRE', key, ARGV[4])
redis.call('ZADD', prefix .. 'workers', now() + tonumber(ARGV[4]) / 1000, ARGV[2])
redis.call('ZREMRANGEBYSCORE', prefix .. 'workers', '-inf', now())
return 0
"""

# ARGV: prefix. Returns {id, info, seen, …} of every live worker.
_WORKERS = """
redis.call('ZREMRANGEBYSCORE', prefix .. 'workers', '-inf', now())
local out = {}
for _, id in ipairs(redis.call('ZRANGE', prefix .. 'workers', 0, -1)) do
  local w = redis.call('HMGET', prefix .. 'w:' .. id, 'info', 'seen')
  if w[1] then
    out[#out + 1] = id
    out[#out + 1] = w[1]
    out[#out + 1] = w[2]
  end
end
return out
"""

# ARGV: prefix, worker id.
_FORGET_WORKER = """
redis.call('ZREM', prefix .. 'workers', ARGV[2])
redis.call('DEL', prefix .. 'w:' .. ARGV[2])
return 0
"""

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
        wake = tuple(f"{self.prefix}q:{q}:wake" for q in queues)
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
