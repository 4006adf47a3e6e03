# Key schema, under the same prefix as the broker's (`soloist:` unless `?prefix=`):
#
#   r:<task id>          HASH    s state, b body; expires with the result's ttl
#   r:<task id>:done     LIST    one token, pushed when a final state is recorded; waiters
#                                block on it with BLMOVE from the list to itself, which
#                                leaves the token in place, so every waiter wakes
"""Results on Redis: expired by Redis itself, and waited for without polling."""

from __future__ import annotations

import math
import time
from functools import partial
from typing import cast

from ..brokers.redis import RedisConnection
from .base import FINAL_STATES, ResultStore

# ARGV: prefix, task id, state, body, ttl in ms. Returns 0 if a final state is already there.
_PUT = """
local key = prefix .. 'r:' .. ARGV[2]
local final = {$FINAL}
local old = redis.call('HGET', key, 's')
if old and final[old] then return 0 end
redis.call('HSET', key, 's', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
if final[ARGV[3]] then
  local done = key .. ':done'
  redis.call('DEL', done)
  redis.call('LPUSH', done, 1)
  redis.call('PEXPIRE', done, ARGV[5])
end
return 1
""".replace("$FINAL", ", ".join(f"[{state!r}] = true" for state in sorted(FINAL_STATES)))


class RedisResultStore(ResultStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = RedisConnection(url)
        self.prefix = self.redis.prefix
        self._put = self.redis.script(_PUT)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}r:{task_id}"

    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        ttl_ms = max(int(ttl * 1000), 1)
        return bool(self._put(task_id, state, body, ttl_ms))

    def get(self, task_id: str) -> tuple[str, bytes] | None:
        key = self._key(task_id)
        reply = self.redis.call(partial(self.redis.client.hmget, key, "s", "b"))
        state, body = cast("list[bytes | None]", reply)
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
            command = ("BLMOVE", done, done, "RIGHT", "LEFT", seconds)
            self.redis.call(partial(self.redis.client.execute_command, *command))

    def forget(self, task_id: str) -> None:
        key = self._key(task_id)
        self.redis.call(lambda: self.redis.client.delete(key, key + ":done"))

    def expire(self) -> int:
        """Redis drops expired results itself."""
        return 0

    def close(self) -> None:
        self.redis.close()
