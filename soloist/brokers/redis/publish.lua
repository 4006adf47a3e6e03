-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then queue, body, delay in seconds ("0": none), score (minus the priority)
-- for each message. Returns the ids.
local ids = {}
for i = 2, #ARGV, 4 do
  local queue, delay, score = ARGV[i], ARGV[i + 2], ARGV[i + 3]
  local id = string.format('%015d', redis.call('INCR', prefix .. 'ids'))
  -- n, a and r are left out until they are set (absent reads as 0, 0 and "").
  redis.call('HSET', mkey(id), 'q', queue, 'b', ARGV[i + 1], 's', score)
  if delay ~= '0' then
    redis.call('ZADD', qkey(queue, 'delayed'), now() + tonumber(delay), id)
  else
    redis.call('ZADD', qkey(queue, 'ready'), score, id)
  end
  -- Wakes a sleeper for a delayed message too, so it shortens its sleep to the new due time.
  wake(queue)
  ids[#ids + 1] = id
end
return ids
