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
from pathlib import Path
from typing import cast

from ..brokers.redis import CHUNK
from ..brokers.redis_connection import RedisConnection
from ..brokers.redis_script import Script, _lua
from .base import FINAL_STATES, REVOKED, ResultStore, Revocation
from .redis_feed import RevocationFeed

#: The Lua scripts, one file each in results/redis/, each opening with the keys it
#: touches (the schema above); brokers/redis/prelude.lua runs before each (now(), prefix).
_LUA = Path(__file__).with_name("redis")
_PUT = _lua("put", _LUA)
_PUT_NEW = _lua("put_new", _LUA)
_REVOKE = _lua("revoke", _LUA)
#: prune_revocations.lua drops the log's expired entries and names its keys.
_LOG_REVOCATION = _lua("prune_revocations", _LUA) + _lua("log_revocation", _LUA)
_REVOKED_SINCE = _lua("prune_revocations", _LUA) + _lua("revoked_since", _LUA)
_FORGET_IF = _lua("forget_if", _LUA)
_CHORD_ADD = _lua("chord_add", _LUA)
_CLAIM = _lua("claim", _LUA)
_SWAP = _lua("swap", _LUA)
_TAKE_TOKEN = _lua("take_token", _LUA)
#: keep_slots.lua defines keep(), which keeps a semaphore's ZSET as long as its last slot.
_ACQUIRE_SLOT = _lua("keep_slots", _LUA) + _lua("acquire_slot", _LUA)
_RENEW_SLOTS = _lua("keep_slots", _LUA) + _lua("renew_slots", _LUA)

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
