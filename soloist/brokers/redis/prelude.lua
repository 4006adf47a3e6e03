-- Key schema. Every key starts with the prefix (`soloist:` unless the URL says `?prefix=`).
--
--   ids                  STRING  counter behind message ids (INCR); an id is the counter,
--                                zero-padded to 15 digits, so ids sort by age as strings
--   m:<id>               HASH    one message: q queue, b body, s its score in ready (minus
--                                its priority), n delivery count, a retries, r receipt of
--                                its current lease ("" when none); a dead letter also has
--                                why (reason) and t (dead_at). n, a and r are absent until
--                                first set (read: 0, 0, "")
--   q:<queue>:ready      ZSET    due messages: score -priority, member id (equal scores sort
--                                by member, that is by age)
--   q:<queue>:delayed    ZSET    messages not due yet: score = unix time they fall due
--   q:<queue>:leased     ZSET    messages handed out: score = unix time the lease lapses
--   q:<queue>:dead       ZSET    dead letters: score = unix time they died
--   q:<queue>:waiters    LIST    tickets (f:<random>) of fetchers waiting for this queue,
--                                newest first; a ticket gone or expired is skipped and
--                                dropped (on one server; a Cluster's fetchers use wake)
--   f:<random>           STRING  a waiting fetcher's ticket: "<receipt> <lease seconds>"
--                                for the message handed to it; expires TICKET_GRACE after
--                                its wait ends (the next wait keeps it: stay.lua), and
--                                whoever hands it a message or a wake-up deletes it
--   f:<random>:in        LIST    that fetcher's inbox, which it blocks on: a message handed
--                                to it, leased ("<id> <receipt> <len(queue)> <queue><body>"),
--                                or "" (a wake-up: something may be claimable)
--   q:<queue>:wake       LIST    on a Cluster, at most one wake-up token: its fetchers block
--                                on it (their queues and inbox would lie apart)
--   q:<queue>:lost       STRING  messages a claim found without their hash: evicted, which
--                                only an evicting maxmemory-policy does (workers refuse one)
--   workers              ZSET    worker id -> unix time its heartbeat expires
--   w:<worker id>        HASH    info, seen; expires with the heartbeat
--   schema               HASH    part (broker, results) -> the version of its key layout,
--                                set on first use; a Soloist reading another one refuses it
--
-- A message is always in exactly one of ready, delayed, leased or dead (a lapsed lease
-- stays in leased until a claim moves it back to ready). Every change of place is one Lua
-- script, so it is atomic, and every script reads the clock of the Redis server, so
-- workers on machines with skewed clocks agree on when leases lapse.
--
-- Memory: scripts that grow the data (publish, claim) carry no `allow-oom` flag, so at
-- `maxmemory` Redis refuses them whole, before they change anything: no task is started
-- whose result could not be stored. Settling, renewing leases and reading are flagged
-- `allow-oom`: they free memory or move a message, and must go on while it is full.
--
-- 
-- Shared by every script: ARGV[1] is the key prefix.
local prefix = ARGV[1]
-- Arguments of redis.call are best strings: a Lua number is formatted with %.17g first,
-- which costs about as much as the call (a few thousand instructions), and so does each
-- tonumber(). So the scripts pass on the strings they are given where they can.
--
-- The server's clock, read once, by the scripts that need it: TIME is a call of its own.
-- now_text() is the time as "seconds.micros", for arguments; now() as a number.
local clock, clock_text
local function now_text()
  if not clock_text then
    local t = redis.call('TIME')
    clock_text = t[1] .. '.' .. string.sub('00000' .. t[2], -6)
  end
  return clock_text
end
local function now()
  if not clock then clock = tonumber(now_text()) end
  return clock
end
local function qkey(queue, kind) return prefix .. 'q:' .. queue .. ':' .. kind end
local function mkey(id) return prefix .. 'm:' .. id end
-- A ticket outlives its fetcher's wait by this long (ms): the fetcher's next wait, which
-- follows at once, keeps it (stay.lua) rather than claiming again, and what is handed over
-- in between waits in the inbox for that wait.
local TICKET_GRACE = 1000
-- An idle fetcher's inbox lives this long after something is put in it: one SIGKILLed
-- while waiting leaves it behind (a message in it is leased, and comes back when that
-- lapses).
local INBOX_TTL = '60000'
-- The ticket and its value ("<receipt> <lease>") of the fetcher waiting longest for
-- `queue`, taken (so nothing else is handed to it); nil if none waits. The tickets before
-- it that are gone (their fetcher woke, or died) are dropped on the way.
local function waiter(queue)
  local key = qkey(queue, 'waiters')
  while true do
    local ticket = redis.call('RPOP', key)
    if not ticket then return nil end
    local lease = redis.call('GETDEL', ticket)
    if lease then return ticket, lease end
  end
end
-- (Appended, and the fetcher pops from the front: one left there by a wait whose reply
-- was lost comes out before a later wake-up.)
local function deliver(ticket, entry)
  local inbox = ticket .. ':in'
  redis.call('RPUSH', inbox, entry)
  redis.call('PEXPIRE', inbox, INBOX_TTL)
end
-- Something of `queue` may be claimable: wake one fetcher waiting for it. On a Cluster
-- (whose script calls name the prefix as KEYS[1], to route them) fetchers block on the
-- queue's wake list instead: their inbox and the queue would lie in different slots.
local function wake(queue)
  if KEYS[1] then
    local key = qkey(queue, 'wake')
    if redis.call('LLEN', key) == 0 then redis.call('LPUSH', key, '1') end
  else
    local ticket = waiter(queue)
    if ticket then deliver(ticket, '') end
  end
end
local function make_ready(queue, id)
  local score = redis.call('HGET', mkey(id), 's')
  if score then redis.call('ZADD', qkey(queue, 'ready'), score, id) end
end
local function unplace(queue, id)
  redis.call('ZREM', qkey(queue, 'ready'), id)
  redis.call('ZREM', qkey(queue, 'delayed'), id)
  redis.call('ZREM', qkey(queue, 'leased'), id)
end
local function bury(queue, id, reason)
  unplace(queue, id)
  redis.call('HSET', mkey(id), 'r', '', 'why', reason, 't', now_text())
  redis.call('ZADD', qkey(queue, 'dead'), now_text(), id)
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
