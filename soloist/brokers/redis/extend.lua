-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, lease, then id, receipt for each delivery. Returns 1 for each one stale
-- (no longer held).
local stale = {}
local expiry = string.format('%.6f', now() + tonumber(ARGV[2]))  -- (formatted once)
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local queue = held(id, ARGV[i + 1])
  if queue then
    -- A lapsed lease that nobody claimed yet may sit in ready: take it back.
    redis.call('ZREM', qkey(queue, 'ready'), id)
    redis.call('ZADD', qkey(queue, 'leased'), expiry, id)
    stale[#stale + 1] = 0
  else
    stale[#stale + 1] = 1
  end
end
return stale
