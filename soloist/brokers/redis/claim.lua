-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, ticket, wait, max_count, lease, receipt, max_deliveries, poison reason
-- format, queues... Returns {wait_ms, id, queue, body, delivery_count, retries, id, ...};
-- wait_ms, when nothing was claimed, is how long until a delayed message or lease of these
-- queues falls due (-1: none).
--
-- ticket, when not "", names the caller's ticket (prelude.lua), and wait the milliseconds
-- of the BLPOP on its inbox that follows in the same write. If nothing was claimed, the
-- caller waits for these queues: the ticket is set for that long (and TICKET_GRACE more)
-- and put on each queue's waiters, so a publish hands its message straight to the
-- caller's inbox (and anything else that makes a message due wakes it). Otherwise the
-- ticket is deleted and "" goes in the inbox, so the BLPOP returns at once: when
-- something was claimed, or falls due well before the wait ends.
local ticket, wait = ARGV[2], ARGV[3]
local want, receipt, max_deliveries, poison = tonumber(ARGV[4]), ARGV[6], ARGV[7], ARGV[8]
local FIRST_QUEUE = 9
local out, got = {0}, 0
-- Queues whose ready set this claim emptied: no ZCARD needed to know they need no wake.
local emptied = {}
local function promote(queue, kind)
  local key = qkey(queue, kind)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now_text(), 'LIMIT', '0', '$CHUNK')
  for _, id in ipairs(due) do
    redis.call('ZREM', key, id)
    make_ready(queue, id)
  end
end
for i = FIRST_QUEUE, #ARGV do
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
      local seen = msg[1] and tonumber(msg[1]) or 0
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
      elseif seen > 0 and seen >= tonumber(max_deliveries) then
        redis.call('HSET', m, 'n', seen + 1)
        bury(queue, id, string.format(poison, seen))
      else
        redis.call('HSET', m, 'n', seen > 0 and seen + 1 or '1', 'r', receipt)
        claimed[#claimed + 1] = id
        out[#out + 1] = id
        out[#out + 1] = queue
        out[#out + 1] = msg[2]
        out[#out + 1] = seen + 1
        out[#out + 1] = msg[3] and tonumber(msg[3]) or 0
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
  if #claimed > 0 then
    local expiry = string.format('%.6f', now() + tonumber(ARGV[5]))  -- (formatted once)
    for k = #claimed, 1, -1 do
      leases[#leases + 1] = expiry
      leases[#leases + 1] = claimed[k]
    end
  end
  variadic('ZADD', qkey(queue, 'leased'), leases)
end
local next_due = nil
for i = FIRST_QUEUE, #ARGV do
  local queue = ARGV[i]
  if not emptied[queue] and redis.call('ZCARD', qkey(queue, 'ready')) > 0 then wake(queue) end
  if got == 0 then
    for _, kind in ipairs({'delayed', 'leased'}) do
      local first = redis.call('ZRANGE', qkey(queue, kind), '0', '0', 'WITHSCORES')
      if first[2] and (next_due == nil or tonumber(first[2]) < next_due) then
        next_due = tonumber(first[2])
      end
    end
  end
end
if got == 0 then
  out[1] = next_due and math.max(math.ceil((next_due - now()) * 1000), 1) or -1
end
if ticket ~= '' then
  -- (The caller waits no longer than what it knew falls due: 10 ms of slack for the time
  -- since, so that only a due time it did not know, and sooner, ends the wait at once.)
  if got == 0 and (out[1] < 0 or out[1] + 10 >= tonumber(wait)) then
    redis.call('SET', ticket, receipt .. ' ' .. ARGV[5], 'PX', tonumber(wait) + TICKET_GRACE)
    for i = FIRST_QUEUE, #ARGV do
      local waiters = qkey(ARGV[i], 'waiters')
      redis.call('LREM', waiters, '0', ticket)
      redis.call('LPUSH', waiters, ticket)
    end
  else
    redis.call('DEL', ticket)  -- a ticket left standing by the last wait: nothing more for it
    deliver(ticket, '')
  end
end
return out
