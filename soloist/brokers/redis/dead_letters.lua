-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue, limit. Returns {id, body, reason, delivery_count, retries, dead_at, …}.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', qkey(ARGV[2], 'dead'), 0, tonumber(ARGV[3]) - 1)) do
  local m = redis.call('HMGET', mkey(id), 'b', 'why', 'n', 'a', 't')
  m[4] = m[4] or 0 -- (absent until a retry)
  out[#out + 1] = id
  for k = 1, 5 do out[#out + 1] = m[k] end
end
return out
