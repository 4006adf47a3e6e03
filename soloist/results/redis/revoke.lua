-- Keys (the schema opens results/redis.py): r:<task id> HASH s state, b body;
-- r:<task id>:done LIST the token waiters block on.
-- ARGV: prefix, task id, body, ttl in ms, terminate (1/0). Records the revocation, or
-- returns 0 if the task already ended; log_revocation.lua logs it (the same ARGV). Ends
-- without a return: the store appends the log's script and/or `return 1`.
local key = prefix .. 'r:' .. ARGV[2]
local final = {$FINAL}
local old = redis.call('HGET', key, 's')
if old and final[old] and old ~= '$REVOKED' then return 0 end
redis.call('HSET', key, 's', '$REVOKED', 'b', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
local done = key .. ':done'
redis.call('DEL', done)
redis.call('LPUSH', done, 1)
redis.call('PEXPIRE', done, ARGV[4])
