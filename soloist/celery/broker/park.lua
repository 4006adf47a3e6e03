-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, visibility timeout, then tag, receipt, due (unix time) for each: the lease
-- now ends at the ETA and nobody holds it; it is restored to its list then.
local vt = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 3 do
  local tag = ARGV[i]
  local lease = held(tag, ARGV[i + 1])
  if lease then
    lease.r, lease.s = '', stamp(tonumber(ARGV[i + 2]) - vt)
    redis.call('ZADD', index, lease.s, tag)
    redis.call('HSET', leases, tag, cjson.encode(lease))
    count_down(tag)
  end
end
return 0
