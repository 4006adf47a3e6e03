# Key schema: kombu's Redis layout, every key under Celery's `global_keyprefix` (P):
#
#   P<queue>                    LIST  messages of priority step 0: producers LPUSH, consumers
#   P<queue>\x06\x16<step>      LIST  take from the right; one list per other priority step
#                                     (3, 6, 9 by default), served after step 0
#   Punacked                    HASH  delivery tag -> JSON [message, exchange, routing key]
#   Punacked_index              ZSET  delivery tag -> kombu: the time it was handed out. A
#                                     message is restored (pushed back to the right of its
#                                     list) once score < now - visibility_timeout
#   P_kombu.binding.<exchange>  SET   "routing key\x06\x16pattern\x06\x16queue" (kombu's)
#
# and Soloist's own, beside them:
#
#   Psoloist.leases             HASH  tag -> JSON {r receipt, s score, l list, q queue} of a
#                                     message a Soloist worker holds (r "" while it waits
#                                     for its ETA)
#   Psoloist.deliveries         HASH  tag -> times Soloist workers took it without settling
#   Psoloist.deliveries.at      ZSET  tag -> when a Soloist worker last took it: a count
#                                     is dropped a day on (a Celery worker may have settled
#                                     the message since, unseen)
#   P<queue>\x06\x16soloist.dead ZSET tag -> unix time it was dead-lettered
#   P<queue>\x06\x16soloist.dead.m HASH tag -> JSON {b message, why, n, t, l list}
#   Psoloist:…                  Soloist's worker heartbeats (brokers/redis.py's keys)
#
# A Soloist lease is kombu's unacked entry with score = lease end - visibility_timeout, so
# Celery's restore_visible and Soloist's claim agree on when it lapses. Renewing the
# lease moves the score on: a Celery worker sharing the queue never restores a message
# whose Soloist worker is alive. The fence is the receipt plus the score: once a lease
# lapsed and anyone (a Celery worker too) took the message again, the score changed and
# the old holder's settle is refused.
"""A broker in kombu's Redis layout, so Celery producers and workers share its queues.

Celery's producers LPUSH; this broker pops from the right, like kombu's BRPOP, and moves
each message into kombu's `unacked` hash and `unacked_index` in the same Lua script, so a
message is never only in a worker's memory (kombu's own BRPOP-then-record has that gap).

Differences from the Soloist layout, by necessity:

* An idle fetch blocks with BLMOVE from the first list to itself (it waits until the
  list is not empty and leaves it as it was), then claims in the same round trip. Other
  lists (priority steps, other queues) are looked at every `MULTI_LIST_POLL` seconds.
* A message whose ETA is in the future is parked: it stays in kombu's unacked hash with
  its lease set to end at the ETA, and is restored to its list then, by whichever worker
  (Soloist or Celery) looks first. Celery's own workers hold ETA messages in memory.
* A retry is a new message: Celery's `Task.retry()` publishes it (with its retries count
  and ETA) before raising, as on Celery's worker, so `retry` here settles the old one as
  an ack does.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..brokers.base import (
    DEFAULT_MAX_DELIVERIES,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    poison_reason,
)
from ..brokers.redis import RedisBroker
from ..brokers.redis_connection import RedisConnection
from ..errors import ConfigurationError
from . import protocol

#: kombu's separator between a queue's name and its priority step.
SEP = "\x06\x16"
#: kombu's defaults (transport options `priority_steps`, `visibility_timeout`).
PRIORITY_STEPS = (0, 3, 6, 9)
VISIBILITY_TIMEOUT = 3600.0
#: How often an idle fetch looks at the lists it cannot block on.
MULTI_LIST_POLL = 0.2
#: A message due within this many seconds is handed out, not parked.
ETA_SLACK = 0.01

_PRELUDE = r"""
local SEP = '\6\22'
local unacked, index = prefix .. 'unacked', prefix .. 'unacked_index'
local leases, counts = prefix .. 'soloist.leases', prefix .. 'soloist.deliveries'
local counted = prefix .. 'soloist.deliveries.at'
-- A tag's delivery count is forgotten with the message (ack, dead letter), or a day after
-- a Soloist worker last took it, in case a Celery worker settled it since.
local function uncount(tag)
  redis.call('HDEL', counts, tag)
  redis.call('ZREM', counted, tag)
end
local function count_down(tag)
  if redis.call('HINCRBY', counts, tag, -1) <= 0 then uncount(tag) end
end
local function dead_index(queue) return prefix .. queue .. SEP .. 'soloist.dead' end
local function dead_store(queue) return prefix .. queue .. SEP .. 'soloist.dead.m' end
local function stamp(t) return string.format('%.3f', t) end
-- The queue and list of `tag` if `receipt` holds its lease, else nil.
local function held(tag, receipt)
  local raw = redis.call('HGET', leases, tag)
  if not raw then return nil end
  local lease = cjson.decode(raw)
  if lease.r ~= receipt then return nil end
  local score = redis.call('ZSCORE', index, tag)
  if not score or tonumber(score) ~= tonumber(lease.s) then return nil end
  return lease
end
-- Forget every trace of `tag`'s delivery; returns the message text, if any.
local function drop(tag)
  local entry = redis.call('HGET', unacked, tag)
  redis.call('HDEL', unacked, tag)
  redis.call('ZREM', index, tag)
  redis.call('HDEL', leases, tag)
  return entry
end
-- The message inside a kombu unacked entry '[message, "exchange", "routing key"]', as
-- the very text it was published as where the entry's tail can be matched.
local function unwrap(entry)
  local ok, decoded = pcall(cjson.decode, entry)
  if not ok or type(decoded) ~= 'table' or type(decoded[1]) ~= 'table' then return nil end
  local tail = ', ' .. cjson.encode(decoded[2]) .. ', ' .. cjson.encode(decoded[3]) .. ']'
  local text
  if string.sub(entry, 1, 1) == '[' and string.sub(entry, -#tail) == tail then
    text = string.sub(entry, 2, #entry - #tail)
  else
    text = cjson.encode(decoded[1])
  end
  return text, decoded[1], decoded[2], decoded[3]
end
local function bury(queue, list, tag, text, reason, n)
  drop(tag)
  uncount(tag)
  local record = cjson.encode({b = text, why = reason, n = n, t = now(), l = list})
  redis.call('HSET', dead_store(queue), tag, record)
  redis.call('ZADD', dead_index(queue), now(), tag)
end
"""

# ARGV: prefix, visibility timeout, steps (comma-separated). Restores up to 100 lapsed
# unacked entries, Soloist's and Celery workers' alike, as kombu's restore_visible does.
_RESTORE = r"""
local function restore_lapsed(vt, steps)
  local lapsed = redis.call('ZRANGEBYSCORE', index, '-inf', now() - vt, 'LIMIT', 0, 100)
  for _, tag in ipairs(lapsed) do
    local lease = redis.call('HGET', leases, tag)
    local entry = drop(tag)
    if entry then
      local text, message, exchange, rkey = unwrap(entry)
      local list
      if lease then
        list = cjson.decode(lease).l
      elseif text then
        -- Held by a Celery worker: its queue from kombu's binding table, as kombu would.
        local queue = rkey
        local table_key = prefix .. '_kombu.binding.' .. tostring(exchange)
        local bound = {}
        if redis.call('TYPE', table_key).ok == 'set' then
          bound = redis.call('SMEMBERS', table_key)
        end
        for _, member in ipairs(bound) do
          local rk, rest = string.match(member, '^(.-)' .. SEP .. '(.*)$')
          if rk == rkey and rest then queue = string.match(rest, '^.-' .. SEP .. '(.*)$') end
        end
        local pri = tonumber((message.properties or {}).priority) or 0
        local step = 0
        for s in string.gmatch(steps, '[^,]+') do
          if tonumber(s) <= pri then step = tonumber(s) end
        end
        list = queue
        if step ~= 0 then list = queue .. SEP .. step end
      end
      if text and list then
        redis.call('RPUSH', prefix .. list, text)
      else
        bury('?', '', tag, entry, 'unacked entry is not a kombu message', 0)
      end
    end
  end
end
"""

# ARGV: prefix, max_count, lease, receipt, max_deliveries, poison format, visibility
# timeout, steps, then list, queue for each list in the order served. Returns {wait_ms,
# tag, queue, message, delivery count, ...}; wait_ms (when nothing was claimed) is how long
# until the first unacked entry lapses (-1: none).
_CLAIM = r"""
local want, lease, receipt = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local max_deliveries, poison = tonumber(ARGV[5]), ARGV[6]
local vt, steps = tonumber(ARGV[7]), ARGV[8]
restore_lapsed(vt, steps)
local out, got, alone = {0}, 0, false
for i = 9, #ARGV, 2 do
  if got >= want or alone then break end
  local list, queue = ARGV[i], ARGV[i + 1]
  local key = prefix .. list
  while got < want do
    local text = redis.call('RPOP', key)
    if not text then break end
    local ok, message = pcall(cjson.decode, text)
    local tag = ok and type(message) == 'table' and type(message.properties) == 'table'
      and message.properties.delivery_tag
    if type(tag) ~= 'string' then
      bury(queue, list, 'soloist-' .. receipt .. '-' .. got .. '-' .. redis.call('LLEN', key),
        text, 'not a kombu message (no delivery tag)', 0)
    else
      local seen = tonumber(redis.call('HGET', counts, tag)) or 0
      -- A message back from a lapsed lease goes out alone (see base.Broker.fetch).
      if seen > 0 and got > 0 then
        redis.call('RPUSH', key, text)
        alone = true
        break
      end
      if seen >= max_deliveries then
        bury(queue, list, tag, text, string.format(poison, seen), seen + 1)
      else
        local info = message.properties.delivery_info or {}
        local exchange, rkey = info.exchange or '', info.routing_key or queue
        local score = stamp(now() + lease - vt)
        redis.call('HSET', unacked, tag,
          '[' .. text .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(rkey) .. ']')
        redis.call('ZADD', index, score, tag)
        redis.call('HSET', leases, tag, cjson.encode({r = receipt, s = score, l = list, q = queue}))
        redis.call('HSET', counts, tag, seen + 1)
        redis.call('ZADD', counted, now(), tag)
        out[#out + 1] = tag
        out[#out + 1] = queue
        out[#out + 1] = text
        out[#out + 1] = seen + 1
        got = got + 1
        if seen > 0 then alone = true; break end
      end
    end
  end
end
if got == 0 then
  local stale = redis.call('ZRANGEBYSCORE', counted, '-inf', now() - 86400, 'LIMIT', 0, 100)
  for _, tag in ipairs(stale) do uncount(tag) end
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if first[2] then
    out[1] = math.max(math.ceil((tonumber(first[2]) + vt - now()) * 1000), 1)
  else
    out[1] = -1
  end
end
return out
"""

# ARGV: prefix, then tag, receipt for each delivery. Returns 1 for each one acked.
_ACK = r"""
local out = {}
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  if held(tag, ARGV[i + 1]) then
    drop(tag)
    uncount(tag)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# ARGV: prefix, lease, visibility timeout, then tag, receipt for each. Returns 1 per one lost.
_EXTEND = r"""
local lease, vt = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 2 do
  local tag = ARGV[i]
  local held_lease = held(tag, ARGV[i + 1])
  if held_lease then
    held_lease.s = stamp(now() + lease - vt)
    redis.call('ZADD', index, held_lease.s, tag)
    redis.call('HSET', leases, tag, cjson.encode(held_lease))
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
  end
end
return out
"""

# ARGV: prefix, then tag, receipt for each: back to the right of its list, uncounted.
_RELEASE = r"""
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  local lease = held(tag, ARGV[i + 1])
  if lease then
    local text = unwrap(drop(tag))
    if text then redis.call('RPUSH', prefix .. lease.l, text) end
    count_down(tag)
  end
end
return 0
"""

# ARGV: prefix, visibility timeout, then tag, receipt, due (unix time) for each: the lease
# now ends at the ETA and nobody holds it; it is restored to its list then.
_PARK = r"""
local vt = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 3 do
  local tag = ARGV[i]
  local lease = held(tag, ARGV[i + 1])
  if lease then
    lease.r, lease.s = '', stamp(tonumber(ARGV[i + 2]) - vt)
    redis.call('ZADD', index, lease.s, tag)
    redis.call('HSET', leases, tag, cjson.encode(lease))
    count_down(tag)
  end
end
return 0
"""

# ARGV: prefix, tag, receipt, reason.
_DEAD_LETTER = r"""
local tag = ARGV[2]
local lease = held(tag, ARGV[3])
if not lease then return 0 end
local text = unwrap(redis.call('HGET', unacked, tag))
bury(lease.q, lease.l, tag, text or '', ARGV[4], tonumber(redis.call('HGET', counts, tag)) or 0)
return 1
"""

# ARGV: prefix, lists... Returns the sum of their lengths.
_DEPTH = r"""
local total = 0
for i = 2, #ARGV do total = total + redis.call('LLEN', prefix .. ARGV[i]) end
return total
"""

# ARGV: prefix, queue, lists... Drops every waiting message; returns how many.
_PURGE = r"""
local total = 0
for i = 3, #ARGV do
  total = total + redis.call('LLEN', prefix .. ARGV[i])
  redis.call('DEL', prefix .. ARGV[i])
end
return total
"""

# ARGV: prefix, queue, limit. Returns {tag, message, reason, count, dead_at, ...}.
_DEAD_LETTERS = r"""
local out = {}
for _, tag in ipairs(redis.call('ZRANGE', dead_index(ARGV[2]), 0, tonumber(ARGV[3]) - 1)) do
  local raw = redis.call('HGET', dead_store(ARGV[2]), tag)
  if raw then
    local d = cjson.decode(raw)
    out[#out + 1] = tag
    out[#out + 1] = d.b
    out[#out + 1] = d.why
    out[#out + 1] = tostring(d.n)
    out[#out + 1] = tostring(d.t)
  end
end
return out
"""

# ARGV: prefix, queue, requeue (1/0), then tags (none: all). Returns how many it settled.
_SETTLE_DEAD = r"""
local queue, requeue = ARGV[2], ARGV[3] == '1'
local tags = {}
for i = 4, #ARGV do tags[#tags + 1] = ARGV[i] end
if #ARGV < 4 then tags = redis.call('ZRANGE', dead_index(queue), 0, 999) end
local done = 0
for _, tag in ipairs(tags) do
  local raw = redis.call('HGET', dead_store(queue), tag)
  if raw then
    local d = cjson.decode(raw)
    redis.call('HDEL', dead_store(queue), tag)
    redis.call('ZREM', dead_index(queue), tag)
    if requeue then redis.call('LPUSH', prefix .. (d.l ~= '' and d.l or queue), d.b) end
    done = done + 1
  end
end
return done
"""

_POISON_FORMAT = poison_reason(987654321).replace("%", "%%").replace("987654321", "%d")


class KombuRedisBroker(Broker):
    """Soloist's broker contract over kombu's Redis layout (see the key schema above).

    The URL is Celery's broker URL with `celery+` before its scheme, and kombu's transport
    options in its query: `global_keyprefix`, `visibility_timeout`, `priority_steps`
    (comma-separated), besides Soloist's `max_deliveries` and redis-py's options.
    """

    def __init__(self, url: str, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.url = url
        parts = urlsplit(url)
        if not parts.scheme.startswith("celery+"):
            raise ConfigurationError(f"not a celery+redis:// URL: {parts.scheme}://…")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.prefix = query.pop("global_keyprefix", "")
        try:
            self.visibility_timeout = float(query.pop("visibility_timeout", VISIBILITY_TIMEOUT))
            steps = query.pop("priority_steps", "")
            self.steps = tuple(int(s) for s in steps.split(",")) if steps else PRIORITY_STEPS
            self.max_deliveries = int(query.pop("max_deliveries", max_deliveries))
        except ValueError as exc:
            raise ConfigurationError(f"bad option in a celery+redis URL: {exc}") from None
        base = parts._replace(scheme=parts.scheme[len("celery+") :])
        self.redis = RedisConnection(urlunsplit(base._replace(query=urlencode(query))))
        self.redis.prefix = self.prefix  # before any script is made: they pass it to Lua
        #: Heartbeats and the worker registry, in Soloist's own keys under the prefix.
        registry = urlencode({**query, "prefix": f"{self.prefix}soloist:"})
        self.registry = RedisBroker(urlunsplit(base._replace(query=registry)))
        script = self.redis.script
        self._claim = script(_PRELUDE + _RESTORE + _CLAIM)
        self._ack = script(_PRELUDE + _ACK)
        self._extend = script(_PRELUDE + _EXTEND)
        self._release = script(_PRELUDE + _RELEASE)
        self._park = script(_PRELUDE + _PARK)
        self._dead_letter = script(_PRELUDE + _DEAD_LETTER)
        self._depth = script(_DEPTH)
        self._purge = script(_PURGE)
        self._dead_letters = script(_PRELUDE + _DEAD_LETTERS)
        self._settle_dead = script(_PRELUDE + _SETTLE_DEAD)

    def lists(self, queues: Sequence[str]) -> list[tuple[str, str]]:
        """(list, queue) in the order kombu serves them: by priority step, then queue."""
        return [(q if s == 0 else f"{q}{SEP}{s}", q) for s in self.steps for q in queues]

    def publish(self, queue: str, body: bytes, *, delay: float = 0, priority: int = 0) -> str:
        """Push a ready kombu message (its delivery tag is its id); Celery's producers are
        the usual publishers, this serves Soloist's own tools (requeueing, tests)."""
        if delay > 0:
            raise ConfigurationError("kombu's Redis layout has no delayed messages: use an ETA")
        step = max([s for s in self.steps if s <= priority] or [0])
        key = self.prefix + (queue if step == 0 else f"{queue}{SEP}{step}")
        self.redis.command("LPUSH", key, body)
        return str(protocol.envelope(body)["properties"].get("delivery_tag", ""))

    def fetch(
        self, queues: Sequence[str], max_count: int, lease: float, timeout: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        receipt = secrets.token_hex(8)
        lists = self.lists(queues)
        steps = ",".join(str(s) for s in self.steps)
        args = (
            max(max_count, 1),
            lease,
            receipt,
            self.max_deliveries,
            _POISON_FORMAT,
            self.visibility_timeout,
            steps,
            *(x for pair in lists for x in pair),
        )
        reply = self._claim(*args)
        while len(reply) == 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            due_in = reply[0]
            wait = min(remaining, self.redis.max_block, math.inf if due_in < 0 else due_in / 1000)
            if len(lists) > 1:
                wait = min(wait, MULTI_LIST_POLL)
            block = max(math.ceil(wait * 1000), 1) / 1000
            first = self.prefix + lists[0][0]
            # BLMOVE from a list to itself waits until it has a message and leaves it in
            # place; the claim runs the moment it returns, in the same round trip.
            reply = self._claim.after(("BLMOVE", first, first, "RIGHT", "RIGHT", block), *args)
        got = [
            Delivery(tag.decode(), queue.decode(), text, int(count), 0, receipt)
            for tag, queue, text, count in zip(*[iter(reply[1:])] * 4, strict=True)
        ]
        return self._park_early(got)

    def _park_early(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Park the deliveries whose ETA is not due yet; return the others."""
        now = time.time()
        ready: list[Delivery] = []
        parked: list[object] = []
        for d in deliveries:
            eta = protocol.eta_of(d.body)
            if eta is not None and eta > now + ETA_SLACK:
                parked += (d.id, d.receipt, eta)
            else:
                ready.append(d)
        if parked:
            self._park(self.visibility_timeout, *parked)
        return ready

    def ack(self, delivery: Delivery) -> bool:
        return self.ack_many([delivery])[0]

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        if not deliveries:
            return []
        return [bool(n) for n in self._ack(*_pairs(deliveries))]

    def retry(self, delivery: Delivery, delay: float, *, counted: bool = True) -> bool:
        """Celery's `Task.retry()` already published the retry: settle this one. A task
        deferred by a Soloist limit (`counted=False`) is given back at once instead."""
        if not counted:
            self.release([delivery])
            return True
        return self.ack(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return bool(self._dead_letter(delivery.id, delivery.receipt, reason))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._release(*_pairs(deliveries))

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[Delivery]:
        if not deliveries:
            return []
        lost = self._extend(lease, self.visibility_timeout, *_pairs(deliveries))
        return [d for d, gone in zip(deliveries, lost, strict=True) if gone]

    def depth(self, queue: str) -> int:
        return int(self._depth(*(name for name, _ in self.lists([queue]))))

    def stats(self, queue: str) -> QueueStats:
        dead = int(self.redis.command("ZCARD", f"{self.prefix}{queue}{SEP}soloist.dead"))
        return QueueStats(self.depth(queue), dead=dead)

    def purge(self, queue: str) -> int:
        return int(self._purge(queue, *(name for name, _ in self.lists([queue]))))

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        reply = self._dead_letters(queue, limit)
        return [
            DeadLetter(tag.decode(), queue, body, why.decode(), int(n), 0, float(t))
            for tag, body, why, n, t in zip(*[iter(reply)] * 5, strict=True)
        ]

    def _settle(self, queue: str, requeue: bool, ids: Sequence[str] | None) -> int:
        if ids is None:
            total = 0
            while moved := int(self._settle_dead(queue, int(requeue))):
                total += moved
            return total
        return int(self._settle_dead(queue, int(requeue), *ids)) if ids else 0

    def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle(queue, True, ids)

    def drop_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return self._settle(queue, False, ids)

    def heartbeat(self, worker_id: str, info: bytes, ttl: float) -> None:
        self.registry.heartbeat(worker_id, info, ttl)

    def workers(self) -> dict[str, tuple[bytes, float]]:
        return self.registry.workers()

    def forget_worker(self, worker_id: str) -> None:
        self.registry.forget_worker(worker_id)

    def close(self) -> None:
        self.registry.close()
        self.redis.close()


def broker_url(url: str, options: dict[str, object]) -> str:
    """The celery+redis URL of a Celery broker URL and its transport options."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name in ("global_keyprefix", "visibility_timeout"):
        if options.get(name) is not None:
            query[name] = str(options[name])
    if options.get("priority_steps"):
        steps = options["priority_steps"]
        assert isinstance(steps, (list, tuple))
        query["priority_steps"] = ",".join(str(s) for s in steps)
    query_text = urlencode(query, quote_via=quote)
    return urlunsplit(parts._replace(scheme=f"celery+{parts.scheme}", query=query_text))


def _pairs(deliveries: Sequence[Delivery]) -> list[object]:
    return [x for d in deliveries for x in (d.id, d.receipt)]
