# Key schema: Celery's Redis result backend, under its `global_keyprefix` (P):
#
#   Pcelery-task-meta-<task id>   STRING  JSON {status, result, traceback, children,
#                                         date_done, task_id}; a failure's result is
#                                         {exc_type, exc_message (a list), exc_module}.
#                                         Expires after `result_expires`; every write is
#                                         also PUBLISHed on the key's name as channel,
#                                         which Celery's AsyncResult.get() listens to
#   Psoloist.revoked              ZSET    Soloist's revocation log: task id -> unix time
#   Psoloist.revoked.terminate    SET     the ids revoked with terminate
"""Results in Celery's Redis backend format, for the records Soloist itself writes.

Celery's tracer stores what a task's run ends in (SUCCESS, FAILURE, RETRY, STARTED) with
the app's own backend. This store writes the rest in the same format: a task stopped at
its hard time limit (by the keeper or the watchdog process), a revoked one, an expired
one. A final state is never overwritten (Celery only protects SUCCESS).

Revocations reach Soloist workers two ways: Celery's `control.revoke` broadcast (see
`control.Pidbox`, handed to the store by the Celery app view) and Soloist's own log, which
`soloist revoke` and `revoke()` here write.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kombu.utils.json import dumps, loads

from ..brokers.redis_connection import RedisConnection
from ..errors import ConfigurationError
from ..results.base import FAILURE, REVOKED, SUCCESS, ResultStore, Revocation
from ..serializers import Codec

if TYPE_CHECKING:
    from .control import AMQPPidbox, Pidbox

META_PREFIX = "celery-task-meta-"
#: Reads the records Soloist's worker writes itself (a hard time limit's failure).
_SOLOIST = Codec()
#: Celery's default `result_expires`: one day.
DEFAULT_EXPIRES = 86400.0
#: Where Celery's exception classes live, for the failures Soloist records itself.
_CELERY_EXCEPTIONS = {"TimeLimitExceeded", "SoftTimeLimitExceeded", "TaskRevokedError"}

# ARGV: prefix, ttl in ms, then task id, state, meta for each. Returns 1 per one written.
_PUT = r"""
local final = {SUCCESS = true, FAILURE = true, REVOKED = true}
local out = {}
for i = 3, #ARGV, 3 do
  local key = prefix .. 'celery-task-meta-' .. ARGV[i]
  local old = redis.call('GET', key)
  local ok, meta = false, nil
  if old then ok, meta = pcall(cjson.decode, old) end
  if ok and type(meta) == 'table' and final[meta.status] then
    out[#out + 1] = 0
  else
    redis.call('SET', key, ARGV[i + 2], 'PX', ARGV[2])
    redis.call('PUBLISH', key, ARGV[i + 2])
    out[#out + 1] = 1
  end
end
return out
"""

# ARGV: prefix, task id, meta, ttl in ms, terminate (1/0). Returns 0 if it already ended.
_REVOKE = r"""
local key = prefix .. 'celery-task-meta-' .. ARGV[2]
local old = redis.call('GET', key)
if old then
  local ok, meta = pcall(cjson.decode, old)
  if ok and type(meta) == 'table' and (meta.status == 'SUCCESS' or meta.status == 'FAILURE') then
    return 0
  end
end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
redis.call('PUBLISH', key, ARGV[3])
redis.call('ZADD', prefix .. 'soloist.revoked', now(), ARGV[2])
if ARGV[5] == '1' then redis.call('SADD', prefix .. 'soloist.revoked.terminate', ARGV[2]) end
-- Entries older than a day are dropped: revocations last as long as results by default.
local old_ids = redis.call('ZRANGEBYSCORE', prefix .. 'soloist.revoked', '-inf', now() - 86400)
for _, id in ipairs(old_ids) do
  redis.call('ZREM', prefix .. 'soloist.revoked', id)
  redis.call('SREM', prefix .. 'soloist.revoked.terminate', id)
end
return 1
"""

# ARGV: prefix, since. Returns {id, at, terminate, ...}.
_REVOKED_SINCE = r"""
local out = {}
local got = redis.call('ZRANGEBYSCORE', prefix .. 'soloist.revoked', ARGV[2], '+inf', 'WITHSCORES')
for i = 1, #got, 2 do
  out[#out + 1] = got[i]
  out[#out + 1] = got[i + 1]
  out[#out + 1] = redis.call('SISMEMBER', prefix .. 'soloist.revoked.terminate', got[i])
end
return out
"""


# ARGV: prefix, task id, the record expected. Deletes it only if it is still that record.
_FORGET_IF = r"""
local key = prefix .. 'celery-task-meta-' .. ARGV[2]
if redis.call('GET', key) == ARGV[3] then redis.call('DEL', key) return 1 end
return 0
"""


def exception_meta(exc_type: str, message: Any, module: str | None) -> dict[str, Any]:
    """A failure's `result` as Celery stores it (the JSON form of an exception)."""
    args = list(message) if isinstance(message, (list, tuple)) else [message]
    return {"exc_type": exc_type, "exc_message": args, "exc_module": module}


def meta(task_id: str, state: str, result: Any, traceback: str | None = None) -> bytes:
    """A record in Celery's format; final states get their `date_done`."""
    done = state in (SUCCESS, FAILURE, REVOKED)
    record = {
        "status": state,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": dt.datetime.now(dt.timezone.utc).isoformat() if done else None,
        "task_id": task_id,
    }
    text: str = dumps(record)
    return text.encode()


def revoked_meta(task_id: str, reason: str) -> bytes:
    return meta(task_id, REVOKED, exception_meta("TaskRevokedError", reason, "celery.exceptions"))


class CeleryResults(ResultStore):
    """Celery's Redis result backend seen through Soloist's result store contract.

    The URL is Celery's backend URL with `celery+` before its scheme, and in its query
    `global_keyprefix` and `expires` (seconds; Celery's `result_expires`).
    """

    def __init__(self, url: str, pidbox: Pidbox | AMQPPidbox | None = None) -> None:
        self.url = url
        parts = urlsplit(url)
        if not parts.scheme.startswith("celery+"):
            raise ConfigurationError(f"not a celery+redis:// URL: {parts.scheme}://…")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        prefix = query.pop("global_keyprefix", "")
        try:
            self.expires = float(query.pop("expires", DEFAULT_EXPIRES))
        except ValueError:
            raise ConfigurationError("bad expires in a celery+redis URL") from None
        base = parts._replace(scheme=parts.scheme[len("celery+") :], query=urlencode(query))
        self.redis = RedisConnection(urlunsplit(base))
        self.redis.prefix = prefix  # before any script is made: they pass it to Lua
        self.prefix = prefix
        self.pidbox = pidbox
        self._put = self.redis.script(_PUT)
        self._revoke = self.redis.script(_REVOKE)
        self._revoked_since = self.redis.script(_REVOKED_SINCE)
        self._forget_if = self.redis.script(_FORGET_IF)

    def key(self, task_id: str) -> str:
        return f"{self.prefix}{META_PREFIX}{task_id}"

    def put(self, task_id: str, state: str, body: bytes, ttl: float) -> bool:
        return self.put_many([(task_id, state, body)], ttl)[0]

    def put_many(self, items: Sequence[tuple[str, str, bytes]], ttl: float) -> list[bool]:
        """Store records: each body is a Celery record (`meta`), or a Soloist failure
        record (the keeper's hard time limit), turned into one."""
        if not items:
            return []
        args: list[object] = []
        for task_id, state, body in items:
            args += (task_id, state, self._celery_meta(task_id, state, body))
        ms = max(int(min(ttl, self.expires) * 1000), 1)
        return [bool(n) for n in self._put(ms, *args)]

    @staticmethod
    def _celery_meta(task_id: str, state: str, body: bytes) -> bytes:
        if body[:1] == b"{":
            return body  # already Celery's (see `meta`)
        record = _SOLOIST.loads(body)
        if state == FAILURE and isinstance(record, dict):
            exc_type = str(record.get("exc_type", "Exception"))
            module = "celery.exceptions" if exc_type in _CELERY_EXCEPTIONS else None
            result = exception_meta(exc_type, record.get("message", ""), module)
            return meta(task_id, FAILURE, result, record.get("traceback") or None)
        value = record.get("value") if isinstance(record, dict) else record
        return meta(task_id, state, value)

    def get(self, task_id: str) -> tuple[str, bytes] | None:
        """(state, the Celery record) of `task_id`, or None."""
        raw = self.redis.command("GET", self.key(task_id))
        if raw is None:
            return None
        try:
            record = loads(raw)
            return str(record["status"]), bytes(raw)
        except (ValueError, KeyError, TypeError):
            return None

    def revoke(self, task_id: str, body: bytes, ttl: float, terminate: bool = False) -> bool:
        ms = max(int(min(ttl, self.expires) * 1000), 1)
        return bool(self._revoke(task_id, revoked_meta(task_id, "revoked"), ms, int(terminate)))

    def revoked_since(self, since: float) -> list[Revocation]:
        """Soloist's log since `since`, and Celery's revoke broadcasts heard since the
        last call (as if logged now). A broadcast is also recorded as `revoke()` records
        it: REVOKED unless the task already ended, and in the log for workers that start
        later (a task stopped by its pool, not by its own runner, is recorded by this)."""
        heard = self.pidbox.revoked() if self.pidbox is not None else []
        for task_id, terminate in heard:
            self.revoke(task_id, b"", self.expires, terminate)
        reply = self._revoked_since(since)
        got = [
            Revocation(tid.decode(), float(at), bool(term))
            for tid, at, term in zip(*[iter(reply)] * 3, strict=True)
        ]
        now = time.time()
        return got + [Revocation(task_id, now, terminate) for task_id, terminate in heard]

    def forget(self, task_id: str) -> None:
        self.redis.command("DEL", self.key(task_id))

    def forget_if(self, task_id: str, record: tuple[str, bytes]) -> bool:
        return bool(self._forget_if(task_id, record[1]))

    def chord_add_many(
        self, items: Sequence[tuple[str, int, int, bytes]], ttl: float
    ) -> list[list[bytes] | None]:
        """Not for Celery apps: their chords are Celery's, completed by Celery's tracer
        through the app's own backend (`on_chord_part_return`)."""
        raise ConfigurationError("a Celery app's chords go through Celery's result backend")

    def expire(self) -> int:
        return 0  # Redis expires the records itself

    def close(self) -> None:
        if self.pidbox is not None:
            self.pidbox.close()
        self.redis.close()


def results_url(url: str, options: dict[str, Any], expires: float | None) -> str:
    """The celery+redis URL of a Celery result backend URL and its transport options."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if options.get("global_keyprefix"):
        query["global_keyprefix"] = str(options["global_keyprefix"])
    if expires is not None:
        query["expires"] = str(expires)
    return urlunsplit(parts._replace(scheme=f"celery+{parts.scheme}", query=urlencode(query)))
