-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue, requeue (1) or drop (0), ids... (none: up to CHUNK of the oldest).
-- Returns how many were moved.
local queue, requeue = ARGV[2], ARGV[3] == '1'
local dead = qkey(queue, 'dead')
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ARGV < 4 then ids = redis.call('ZRANGE', dead, 0, $CHUNK - 1) end
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', dead, id) == 1 then
    moved = moved + 1
    if requeue then
      redis.call('HSET', mkey(id), 'n', '0', 'a', '0', 'r', '')
      redis.call('HDEL', mkey(id), 'why', 't')
      make_ready(queue, id)
    else
      redis.call('DEL', mkey(id))
    end
  end
end
if requeue and moved > 0 then wake(queue) end
return moved
