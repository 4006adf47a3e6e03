# Key schema, under the same prefix as the broker's (`soloist:` unless `?prefix=`):
#
#   r:<task id>          HASH    s state, b body; expires with the result's ttl
#   r:<task id>:done     LIST    one token, pushed when a final state is recorded; waiters
#                                block on it with BLMOVE from the list to itself, which
#                                leaves the token in place, so every waiter wakes
#   revoked:at           ZSET    revocation log: task id -> unix time it was revoked
#   revoked:until        ZSET    the same ids -> unix time the entry expires
#   revoked:terminate    SET     the ids revoked with terminate=True
#   chord:<chord id>     HASH    member index -> its result record; expires with the ttl
#   chord:<chord id>:last STRING the index of the member whose add completed the hash
"""Results on Redis: expired by Redis itself, and waited for without polling."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import cast

from ..brokers.redis import CHUNK, RedisConnection
from .base import FINAL_STATES, REVOKED, ResultStore, Revocation

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

# ARGV: prefix, task id, body, ttl in ms, terminate (1/0). Returns 0 if it already ended.
_REVOKE = (
    _PRUNE
    + """
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
redis.call('ZADD', at, now(), ARGV[2])
redis.call('ZADD', till, now() + tonumber(ARGV[4]) / 1000, ARGV[2])
if ARGV[5] == '1' then redis.call('SADD', term, ARGV[2]) else redis.call('SREM', term, ARGV[2]) end
return 1
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

_FINAL_TABLE = ", ".join(f"[{state!r}] = true" for state in sorted(FINAL_STATES))
_PUT = _PUT.replace("$FINAL", _FINAL_TABLE)
_REVOKE = _REVOKE.replace("$FINAL", _FINAL_TABLE).replace("$REVOKED", REVOKED)


class RedisResultStore(ResultStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = RedisConnection(url)
        self.prefix = self.redis.prefix
        self._put = self.redis.script(_PUT)
        self._put_new = self.redis.script(_PUT_NEW)
        self._revoke = self.redis.script(_REVOKE)
        self._revoked_since = self.redis.script(_REVOKED_SINCE, allow_oom=True)
        self._forget_if = self.redis.script(_FORGET_IF, allow_oom=True)
        self._chord_add = self.redis.script(_CHORD_ADD)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}r:{task_id}"

    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        return self.put_many([(task_id, state, body)], ttl)[0]

    def put_many(self, items: Sequence[tuple[str, str, bytes]], ttl: float) -> list[bool]:
        """One script call per CHUNK records."""
        ttl_ms = max(int(ttl * 1000), 1)
        stored: list[bool] = []
        for start in range(0, len(items), CHUNK):
            args = [x for item in items[start : start + CHUNK] for x in item]
            stored += (bool(n) for n in self._put(ttl_ms, *args))
        return stored

    def put_new(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        return bool(self._put_new(task_id, state, body, max(int(ttl * 1000), 1)))

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
        ttl_ms = max(int(ttl * 1000), 1)
        return bool(self._revoke(task_id, body, ttl_ms, int(terminate)))

    def revoked_since(self, since: float) -> list[Revocation]:
        reply = self._revoked_since(repr(float(since)))
        return [
            Revocation(tid.decode(), float(at), bool(int(term)))
            for tid, at, term in zip(*[iter(reply)] * 3, strict=True)
        ]

    def forget(self, task_id: str) -> None:
        key = self._key(task_id)
        self.redis.command("DEL", key, key + ":done")

    def forget_if(self, task_id: str, record: tuple[str, bytes]) -> bool:
        return bool(self._forget_if(task_id, *record))

    def chord_add_many(
        self, items: Sequence[tuple[str, int, int, bytes]], ttl: float
    ) -> list[list[bytes] | None]:
        """One script call per CHUNK members."""
        ttl_ms = max(int(ttl * 1000), 1)
        told: list[list[bytes] | None] = []
        for start in range(0, len(items), CHUNK):
            args = [x for item in items[start : start + CHUNK] for x in item]
            told += (list(r) if r else None for r in self._chord_add(ttl_ms, *args))
        return told

    def expire(self) -> int:
        """Redis drops expired results itself."""
        return 0

    def close(self) -> None:
        self.redis.close()
