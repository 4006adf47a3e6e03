-- Keys (the schema opens results/redis.py): r:<task id> HASH s state, b body.
-- ARGV: prefix, task id, state, body, ttl in ms. Returns 1 if recorded, 0 if a record
-- was there.
local key = prefix .. 'r:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 's', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return 1
