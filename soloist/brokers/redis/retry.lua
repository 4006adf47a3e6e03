-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, id, receipt, delay, retries to add (1, or 0 for a deferral). Returns 1, or
-- `unleased` when not held.
local id, delay = ARGV[2], tonumber(ARGV[4])
local queue = held(id, ARGV[3])
if not queue then return unleased(id) end
unplace(queue, id)
redis.call('HSET', mkey(id), 'r', '', 'n', '0')
redis.call('HINCRBY', mkey(id), 'a', ARGV[5])
if delay > 0 then
  redis.call('ZADD', qkey(queue, 'delayed'), now() + delay, id)
else
  make_ready(queue, id)
end
wake(queue)
return 1
