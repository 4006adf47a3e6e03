-- Keys (the schema opens results/redis.py): r:<task id> HASH s state, b body;
-- r:<task id>:done LIST.
-- ARGV: prefix, task id, state, body. Returns 1 if the record was still that and is gone.
local key = prefix .. 'r:' .. ARGV[2]
local old = redis.call('HMGET', key, 's', 'b')
if old[1] ~= ARGV[3] or old[2] ~= ARGV[4] then return 0 end
redis.call('DEL', key, key .. ':done')
return 1
