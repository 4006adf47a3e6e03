-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then queue, body, delay in seconds ("0": none), score (minus the priority)
-- for each message. Returns the ids.
--
-- A message due now, for a queue a fetcher waits for, is handed to that fetcher: leased
-- to it and put in its inbox, so its wait ends with the message, and no claim runs.
local ids = {}
for i = 2, #ARGV, 4 do
  local queue, body, delay, score = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local id = string.format('%015d', redis.call('INCR', prefix .. 'ids'))
  local ticket, lease
  if delay == '0' then ticket, lease = waiter(queue) end
  if ticket then
    local receipt, seconds = string.match(lease, '(%S+) (%S+)')
    redis.call('HSET', mkey(id), 'q', queue, 'b', body, 's', score, 'n', '1', 'r', receipt)
    local expiry = string.format('%.6f', now() + tonumber(seconds))
    redis.call('ZADD', qkey(queue, 'leased'), expiry, id)
    deliver(ticket, id .. ' ' .. receipt .. ' ' .. #queue .. ' ' .. queue .. body)
  else
    -- n, a and r are left out until they are set (absent reads as 0, 0 and "").
    redis.call('HSET', mkey(id), 'q', queue, 'b', body, 's', score)
    if delay ~= '0' then
      redis.call('ZADD', qkey(queue, 'delayed'), now() + tonumber(delay), id)
      -- Wakes a fetcher for a delayed message too, so it shortens its wait to the due time.
      wake(queue)
    else
      redis.call('ZADD', qkey(queue, 'ready'), score, id)
      if KEYS[1] then wake(queue) end  -- on one server, nobody waits (waiter() said so)
    end
  end
  ids[#ids + 1] = id
end
return ids
