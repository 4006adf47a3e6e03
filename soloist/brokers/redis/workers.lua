-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix. Returns {id, info, seen, …} of every live worker.
redis.call('ZREMRANGEBYSCORE', prefix .. 'workers', '-inf', now_text())
local out = {}
for _, id in ipairs(redis.call('ZRANGE', prefix .. 'workers', 0, -1)) do
  local w = redis.call('HMGET', prefix .. 'w:' .. id, 'info', 'seen')
  if w[1] then
    out[#out + 1] = id
    out[#out + 1] = w[1]
    out[#out + 1] = w[2]
  end
end
return out
