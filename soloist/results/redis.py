# Key schema, under the same prefix as the broker's (`soloist:` unless `?prefix=`):
#
#   r:<task id>          HASH    s state, b body; expires with the result's ttl
#   r:<task id>:done     LIST    one token, pushed when a final state is recorded; waiters
#                                block on it with BLMOVE from the list to itself, which
#                                leaves the token in place, so every waiter wakes
#   revoked:at           ZSET    revocation log: task id -> unix time it was revoked
#   revoked:until        ZSET    the same ids -> unix time the entry expires
#   revoked:terminate    SET     the ids revoked with terminate=True
#   revoked:n            STRING  counts revocations logged (INCR): workers read the log
#                                only when it moved, a GET instead of a script when idle
#   revoked:moved        channel a revocation was logged: workers read revoked:n when a
#                                message comes (results/redis_feed.py), not every sync
#   chord:<chord id>     HASH    member index -> its result record; expires with the ttl
#   chord:<chord id>:last STRING the index of the member whose add completed the hash
#   kv:<key>             STRING  a coordination value (claims, schedules' last ticks), with
#                                its own expiry
#   tokens:<key>         ZSET    rate limit: one member per token taken -> when (server clock)
#   slots:<key>          ZSET    semaphore: holder -> when its slot lapses (server clock)
#   schema               HASH    results -> the version of this layout (brokers/redis/
#                                prelude.lua: the broker's part beside it)
#
# On a Redis Cluster (brokers/cluster.py) each key goes under the prefix of its hash tag,
# which is its name above without the suffix: `soloist:{r:<task id>}:r:<task id>:done`,
# `soloist:{revoked}:revoked:at`, `soloist:{kv:<key>}:kv:<key>`. So records spread over
# the shards by task id, a batch of them goes one call per record (pipelined per node),
# and a revocation is two calls: the record, then the log entry (a crash between leaves
# the task recorded REVOKED, which a worker's result cannot overwrite, but not logged: a
# worker that has it does not skip it).
"""Results on Redis: expired by Redis itself, and waited for without polling."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import cast

from ..brokers.redis import CHUNK
from ..brokers.redis_connection import RedisConnection, Script
from .base import FINAL_STATES, REVOKED, ResultStore, Revocation
from .redis_feed import RevocationFeed

# ARGV: prefix, ttl in ms, then task id, state, body for each record. Returns, for each,
# 0 if a final state was already there, else 1.
_PUT = """
local final = {$FINAL}
local out = {}
for i = 3, #ARGV, 3 do
  local key, state = prefix .. 'r:' .. ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', key, 's')
  if old and final[old] then
    out[#out + 1] = 0
  else
    redis.call('HSET', key, 's', state, 'b', ARGV[i + 2])
    redis.call('PEXPIRE', key, ARGV[2])
    if final[state] then
      local done = key .. ':done'
      redis.call('DEL', done)
      redis.call('LPUSH', done, 1)
      redis.call('PEXPIRE', done, ARGV[2])
    end
    out[#out + 1] = 1
  end
end
return out
"""

# Drops expired revocation log entries; shared by the two scripts below.
_PRUNE = """
local at, till = prefix .. 'revoked:at', prefix .. 'revoked:until'
local term = prefix .. 'revoked:terminate'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', till, '-inf', now())) do
  redis.call('ZREM', at, id)
  redis.call('ZREM', till, id)
  redis.call('SREM', term, id)
end
"""

# ARGV: prefix, task id, body, ttl in ms, terminate (1/0). Records the revocation, or
# returns 0 if the task already ended; _LOG_REVOCATION logs it (the same ARGV).
_REVOKE = """
local key = prefix .. 'r:' .. ARGV[2]
local final = {$FINAL}
local old = redis.call('HGET', key, 's')
if old and final[old] and old ~= '$REVOKED' then return 0 end
redis.call('HSET', key, 's', '$REVOKED', 'b', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
local done = key .. ':done'
redis.call('DEL', done)
redis.call('LPUSH', done, 1)
redis.call('PEXPIRE', done, ARGV[4])
"""
_LOG_REVOCATION = (
    _PRUNE
    + """
redis.call('ZADD', at, now(), ARGV[2])
redis.call('ZADD', till, now() + tonumber(ARGV[4]) / 1000, ARGV[2])
if ARGV[5] == '1' then redis.call('SADD', term, ARGV[2]) else redis.call('SREM', term, ARGV[2]) end
redis.call('INCR', prefix .. 'revoked:n')
redis.call('PUBLISH', prefix .. 'revoked:moved', 1)
"""
)

# ARGV: prefix, since. Returns {id, revoked at, terminate (0/1), …}, oldest first.
_REVOKED_SINCE = (
    _PRUNE
    + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', at, ARGV[2], '+inf')) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('ZSCORE', at, id)
  out[#out + 1] = redis.call('SISMEMBER', term, id)
end
return out
"""
)

# ARGV: prefix, task id, state, body. Returns 1 if the record was still that and is gone.
_FORGET_IF = """
local key = prefix .. 'r:' .. ARGV[2]
local old = redis.call('HMGET', key, 's', 'b')
if old[1] ~= ARGV[3] or old[2] ~= ARGV[4] then return 0 end
redis.call('DEL', key, key .. ':done')
return 1
"""

# ARGV: prefix, ttl in ms, then chord id, index, size, record for each member. Returns,
# for each, every member's record in index order to the member whose add completed the set,
# else false (see ResultStore.chord_add_many).
_CHORD_ADD = """
local out = {}
for i = 3, #ARGV, 4 do
  local key, index, size = prefix .. 'chord:' .. ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('HSETNX', key, index, ARGV[i + 3]) == 1 then
    redis.call('PEXPIRE', key, ARGV[2])
    if redis.call('HLEN', key) == size then
      redis.call('SET', key .. ':last', index, 'PX', ARGV[2])
    end
  end
  if redis.call('GET', key .. ':last') == index then
    local all, bodies = redis.call('HGETALL', key), {}
    for j = 1, #all, 2 do bodies[tonumber(all[j]) + 1] = all[j + 1] end
    out[#out + 1] = bodies
  else
    out[#out + 1] = false
  end
end
return out
"""

# ARGV: prefix, task id, state, body, ttl in ms. Returns 1 if recorded, 0 if a record was there.
_PUT_NEW = """
local key = prefix .. 'r:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 's', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return 1
"""

# Coordination (see ResultStore). ARGV: prefix, key, value, ttl in ms. Returns the value
# in place, or nil when this call set it.
_CLAIM = """
local key = prefix .. 'kv:' .. ARGV[2]
local old = redis.call('GET', key)
if old then return old end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
return false
"""

# ARGV: prefix, key, expected, delete (1/0), value, ttl in ms. Returns 1 if swapped.
_SWAP = """
local key = prefix .. 'kv:' .. ARGV[2]
if redis.call('GET', key) ~= ARGV[3] then return 0 end
if ARGV[4] == '1' then
  redis.call('DEL', key)
else
  redis.call('SET', key, ARGV[5], 'PX', ARGV[6])
end
return 1
"""

# ARGV: prefix, key, limit, per (seconds). Returns the seconds to wait, '0' when taken
# (a string: Lua numbers come back truncated to integers).
_TAKE_TOKEN = """
local key = prefix .. 'tokens:' .. ARGV[2]
local limit, per = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now() - per)
local n = redis.call('ZCARD', key)
if n >= limit then
  local nth = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return tostring(math.max(tonumber(nth[2]) + per - now(), 0.001))
end
redis.call('ZADD', key, now(), now() .. ':' .. n)
redis.call('PEXPIRE', key, math.ceil(per * 1000))
return '0'
"""

# Keeps a slots ZSET as long as its latest slot; shared by the two scripts below.
_SLOTS = """
local function keep(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, math.ceil(tonumber(last[2]) * 1000)) end
end
"""

# ARGV: prefix, key, holder, limit, ttl (seconds). Returns 1 if the slot is held.
_ACQUIRE_SLOT = (
    _SLOTS
    + """
local key = prefix .. 'slots:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now())
if not redis.call('ZSCORE', key, ARGV[3]) and redis.call('ZCARD', key) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', key, now() + tonumber(ARGV[5]), ARGV[3])
keep(key)
return 1
"""
)

# ARGV: prefix, ttl (seconds), then key, holder for each slot.
_RENEW_SLOTS = (
    _SLOTS
    + """
for i = 3, #ARGV, 2 do
  local key = prefix .. 'slots:' .. ARGV[i]
  local until_ = redis.call('ZSCORE', key, ARGV[i + 1])
  if until_ and tonumber(until_) > now() then
    redis.call('ZADD', key, now() + tonumber(ARGV[2]), ARGV[i + 1])
    keep(key)
  end
end
"""
)

_FINAL_TABLE = ", ".join(f"[{state!r}] = true" for state in sorted(FINAL_STATES))
_PUT = _PUT.replace("$FINAL", _FINAL_TABLE)
_REVOKE = _REVOKE.replace("$FINAL", _FINAL_TABLE).replace("$REVOKED", REVOKED)


#: The layout of the result keys (the key schema at the top), stamped in `<prefix>schema`.
SCHEMA_VERSION = 1


class RedisResultStore(ResultStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = RedisConnection(url)
        self.redis.require_schema("results", SCHEMA_VERSION)
        self.prefix = self.redis.prefix
        self._put = self.redis.script(_PUT)
        self._put_new = self.redis.script(_PUT_NEW)
        if self.redis.cluster:  # the record and the log in two slots: two scripts
            self._revoke = self.redis.script(_REVOKE + "return 1")
            self._log_revocation = self.redis.script(_LOG_REVOCATION + "return 1")
        else:
            self._revoke = self.redis.script(_REVOKE + _LOG_REVOCATION + "return 1")
        self._revoked_since = self.redis.script(_REVOKED_SINCE, allow_oom=True)
        self._forget_if = self.redis.script(_FORGET_IF, allow_oom=True)
        self._chord_add = self.redis.script(_CHORD_ADD)
        self._claim = self.redis.script(_CLAIM)
        self._swap = self.redis.script(_SWAP)
        self._take_token = self.redis.script(_TAKE_TOKEN)
        self._acquire_slot = self.redis.script(_ACQUIRE_SLOT)
        self._renew_slots = self.redis.script(_RENEW_SLOTS)
        #: On one server, revocations are announced (redis_feed.py); a Cluster's pub/sub
        #: is not used: there each sync reads the counter.
        self._feed = (
            None
            if self.redis.cluster
            else RevocationFeed(self.redis.client, self.redis.key("revoked", "revoked:moved"))
        )
        self._mark = b""

    def _key(self, task_id: str) -> str:
        return self.redis.key(f"r:{task_id}", f"r:{task_id}")

    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        return self.put_many([(task_id, state, body)], ttl)[0]

    def put_many(self, items: Sequence[tuple[str, str, bytes]], ttl: float) -> list[bool]:
        """One script call per CHUNK records."""
        ttl_ms = max(int(ttl * 1000), 1)
        if self.redis.cluster:  # each record in a slot of its own
            calls = [(f"r:{item[0]}", (ttl_ms, *item)) for item in items]
            return [bool(n) for (n,) in self._put.each(calls)]
        stored: list[bool] = []
        for start in range(0, len(items), CHUNK):
            args = [x for item in items[start : start + CHUNK] for x in item]
            stored += (bool(n) for n in self._put(ttl_ms, *args))
        return stored

    def put_call(
        self, record: tuple[str, str, bytes], ttl: float
    ) -> tuple[Script, tuple[object, ...]]:
        """The script and arguments `put_many` runs for one record: for a pipe of acks
        (`RedisBroker.ack_pipe`) that writes it before an ack, in one transaction."""
        return self._put, (max(int(ttl * 1000), 1), *record)

    def put_new(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        ttl_ms = max(int(ttl * 1000), 1)
        return bool(self._put_new(task_id, state, body, ttl_ms, tag=f"r:{task_id}"))

    def get(self, task_id: str) -> tuple[str, bytes] | None:
        key = self._key(task_id)
        state, body = cast("list[bytes | None]", self.redis.command("HMGET", key, "s", "b"))
        return None if state is None or body is None else (state.decode(), body)

    def wait(self, task_id: str, timeout: float | None) -> tuple[str, bytes] | None:
        """Block on the task's done list until a final state is recorded or `timeout` passes."""
        done = self._key(task_id) + ":done"
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.get(task_id)
            if record is not None and record[0] in FINAL_STATES:
                return record
            block = self.redis.max_block
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return record
                block = min(block, remaining)
            # Whole milliseconds, never 0: BLMOVE reads a 0 timeout as "wait forever".
            seconds = max(math.ceil(block * 1000), 1) / 1000
            self.redis.command("BLMOVE", done, done, "RIGHT", "LEFT", seconds)

    def revoke(self, task_id: str, body: bytes, ttl: float, terminate: bool = False) -> bool:
        args = (task_id, body, max(int(ttl * 1000), 1), int(terminate))
        if not self._revoke(*args, tag=f"r:{task_id}"):
            return False
        if self.redis.cluster:
            self._log_revocation(*args, tag="revoked")
        return True

    def revocation_mark(self) -> bytes | None:
        feed = self._feed
        if feed is None or feed.moved():
            try:
                mark = self.redis.command("GET", self.redis.key("revoked", "revoked:n"))
            except BaseException:
                if feed is not None:
                    feed.unread()  # the next sync reads it, message or not
                raise
            self._mark = cast(bytes, mark or b"")
        return self._mark

    def revoked_since(self, since: float) -> list[Revocation]:
        reply = self._revoked_since(repr(float(since)), tag="revoked")
        return [
            Revocation(tid.decode(), float(at), bool(int(term)))
            for tid, at, term in zip(*[iter(reply)] * 3, strict=True)
        ]

    def forget(self, task_id: str) -> None:
        key = self._key(task_id)
        self.redis.command("DEL", key, key + ":done")

    def forget_if(self, task_id: str, record: tuple[str, bytes]) -> bool:
        return bool(self._forget_if(task_id, *record, tag=f"r:{task_id}"))

    def chord_add_many(
        self, items: Sequence[tuple[str, int, int, bytes]], ttl: float
    ) -> list[list[bytes] | None]:
        """One script call per CHUNK members."""
        ttl_ms = max(int(ttl * 1000), 1)
        if self.redis.cluster:  # each chord in a slot of its own
            calls = [(f"chord:{item[0]}", (ttl_ms, *item)) for item in items]
            return [list(r) if r else None for (r,) in self._chord_add.each(calls)]
        told: list[list[bytes] | None] = []
        for start in range(0, len(items), CHUNK):
            args = [x for item in items[start : start + CHUNK] for x in item]
            told += (list(r) if r else None for r in self._chord_add(ttl_ms, *args))
        return told

    def expire(self) -> int:
        """Redis drops expired results itself."""
        return 0

    # Coordination (see ResultStore): one script call each, on the server's clock.

    def claim(self, key: str, value: str, ttl: float) -> str | None:
        old = self._claim(key, value, _ms(ttl), tag=f"kv:{key}")
        return None if old is None else str(old.decode())

    def swap(self, key: str, expected: str, value: str | None, ttl: float) -> bool:
        delete = value is None
        args = (key, expected, int(delete), value or "", _ms(ttl))
        return bool(self._swap(*args, tag=f"kv:{key}"))

    def set_value(self, key: str, value: str, ttl: float) -> None:
        self.redis.command("SET", self.redis.key(f"kv:{key}", f"kv:{key}"), value, "PX", _ms(ttl))

    def peek(self, key: str) -> str | None:
        kv = self.redis.key(f"kv:{key}", f"kv:{key}")
        value = cast("bytes | None", self.redis.command("GET", kv))
        return None if value is None else value.decode()

    def take_token(self, key: str, limit: int, per: float) -> float:
        return float(self._take_token(key, int(limit), repr(float(per)), tag=f"tokens:{key}"))

    def acquire_slot(self, key: str, holder: str, limit: int, ttl: float) -> bool:
        args = (key, holder, int(limit), repr(float(ttl)))
        return bool(self._acquire_slot(*args, tag=f"slots:{key}"))

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        if slots and self.redis.cluster:  # each semaphore in a slot of its own
            self._renew_slots.each([(f"slots:{k}", (repr(float(ttl)), k, h)) for k, h in slots])
        elif slots:
            self._renew_slots(repr(float(ttl)), *(x for slot in slots for x in slot))

    def release_slot(self, key: str, holder: str) -> None:
        self.redis.command("ZREM", self.redis.key(f"slots:{key}", f"slots:{key}"), holder)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
        self.redis.close()


def _ms(seconds: float) -> int:
    """Whole milliseconds, at least 1 (Redis refuses a 0 expiry)."""
    return max(int(seconds * 1000), 1)
