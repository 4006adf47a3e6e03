-- Keys (the schema opens results/redis.py): r:<task id> HASH s state, b body;
-- r:<task id>:done LIST the token waiters block on.
-- ARGV: prefix, ttl in ms, then task id, state, body for each record. Returns, for each,
-- 0 if a final state was already there, else 1.
local final = {$FINAL}
local out = {}
for i = 3, #ARGV, 3 do
  local key, state = prefix .. 'r:' .. ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', key, 's')
  if old and final[old] then
    out[#out + 1] = 0
  else
    redis.call('HSET', key, 's', state, 'b', ARGV[i + 2])
    redis.call('PEXPIRE', key, ARGV[2])
    if final[state] then
      local done = key .. ':done'
      redis.call('DEL', done)
      redis.call('LPUSH', done, 1)
      redis.call('PEXPIRE', done, ARGV[2])
    end
    out[#out + 1] = 1
  end
end
return out
