-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, tag, receipt, reason.
local tag = ARGV[2]
local lease = held(tag, ARGV[3])
if not lease then return 0 end
local text = unwrap(redis.call('HGET', unacked, tag))
bury(lease.q, lease.l, tag, text or '', ARGV[4], tonumber(redis.call('HGET', counts, tag)) or 0)
return 1
