-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue, limit. Returns {tag, message, reason, count, dead_at, ...}.
local out = {}
for _, tag in ipairs(redis.call('ZRANGE', dead_index(ARGV[2]), 0, tonumber(ARGV[3]) - 1)) do
  local raw = redis.call('HGET', dead_store(ARGV[2]), tag)
  if raw then
    local d = cjson.decode(raw)
    out[#out + 1] = tag
    out[#out + 1] = d.b
    out[#out + 1] = d.why
    out[#out + 1] = tostring(d.n)
    out[#out + 1] = tostring(d.t)
  end
end
return out
