-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, lease, visibility timeout, then tag, receipt for each. Returns 1 per one stale
-- (no longer held).
local lease, vt = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 2 do
  local tag = ARGV[i]
  local held_lease = held(tag, ARGV[i + 1])
  if held_lease then
    held_lease.s = stamp(now() + lease - vt)
    redis.call('ZADD', index, held_lease.s, tag)
    redis.call('HSET', leases, tag, cjson.encode(held_lease))
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
  end
end
return out
