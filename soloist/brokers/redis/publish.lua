-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then queue, body, delay, priority for each message. Returns the ids.
local ids = {}
for i = 2, #ARGV, 4 do
  local queue, delay, priority = ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local id = string.format('%015d', redis.call('INCR', prefix .. 'ids'))
  -- n and r are left out until the first claim (absent reads as 0 and ""); the claim
  -- returns a as it is, so it is written.
  redis.call('HSET', mkey(id), 'q', queue, 'b', ARGV[i + 1], 'p', priority, 'a', 0)
  if delay > 0 then
    redis.call('ZADD', qkey(queue, 'delayed'), now() + delay, id)
  else
    redis.call('ZADD', qkey(queue, 'ready'), -priority, id)
  end
  -- Wakes a sleeper for a delayed message too, so it shortens its sleep to the new due time.
  wake(queue)
  ids[#ids + 1] = id
end
return ids
