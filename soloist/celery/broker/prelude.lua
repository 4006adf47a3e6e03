-- Key schema: kombu's Redis layout, every key under Celery's `global_keyprefix` (P):
--
--   P<queue>                    LIST  messages of priority step 0: producers LPUSH, consumers
--   P<queue>\x06\x16<step>      LIST  take from the right; one list per other priority step
--                                     (3, 6, 9 by default), served after step 0
--   Punacked                    HASH  delivery tag -> JSON [message, exchange, routing key]
--   Punacked_index              ZSET  delivery tag -> kombu: the time it was handed out. A
--                                     message is restored (pushed back to the right of its
--                                     list) once score < now - visibility_timeout
--   P_kombu.binding.<exchange>  SET   "routing key\x06\x16pattern\x06\x16queue" (kombu's)
--
-- and Soloist's own, beside them:
--
--   Psoloist.leases             HASH  tag -> JSON {r receipt, s score, l list, q queue} of a
--                                     message a Soloist worker holds (r "" while it waits
--                                     for its ETA)
--   Psoloist.deliveries         HASH  tag -> times Soloist workers took it without settling
--   Psoloist.deliveries.at      ZSET  tag -> when a Soloist worker last took it: a count
--                                     is dropped a day on (a Celery worker may have settled
--                                     the message since, unseen)
--   P<queue>\x06\x16soloist.dead ZSET tag -> unix time it was dead-lettered
--   P<queue>\x06\x16soloist.dead.m HASH tag -> JSON {b message, why, n, t, l list}
--   Psoloist:…                  Soloist's worker heartbeats (brokers/redis.py's keys)
--
-- A Soloist lease is kombu's unacked entry with score = lease end - visibility_timeout, so
-- Celery's restore_visible and Soloist's claim agree on when it lapses. Renewing the
-- lease moves the score on: a Celery worker sharing the queue never restores a message
-- whose Soloist worker is alive. The fence is the receipt plus the score: once a lease
-- lapsed and anyone (a Celery worker too) took the message again, the score changed and
-- the old holder's settle is refused.
--
-- Shared by every script (after brokers/redis/prelude.lua: prefix, now()).
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
