-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue. Drops up to CHUNK waiting messages; returns how many.
local queue, room = ARGV[2], $CHUNK
local function drop(kind, ids)
  for _, id in ipairs(ids) do
    redis.call('ZREM', qkey(queue, kind), id)
    redis.call('DEL', mkey(id))
    room = room - 1
  end
end
drop('ready', redis.call('ZRANGE', qkey(queue, 'ready'), 0, room - 1))
if room > 0 then drop('delayed', redis.call('ZRANGE', qkey(queue, 'delayed'), 0, room - 1)) end
if room > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', qkey(queue, 'leased'), '-inf', now_text(), 'LIMIT', 0, room)
  drop('leased', lapsed)
end
return $CHUNK - room
