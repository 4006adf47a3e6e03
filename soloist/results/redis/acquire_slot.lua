-- Keys (the schema opens results/redis.py): slots:<key> ZSET holder -> when its slot
-- lapses (server clock). keep() is keep_slots.lua's, which runs first.
-- ARGV: prefix, key, holder, limit, ttl (seconds). Returns 1 if the slot is held.
local key = prefix .. 'slots:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now())
if not redis.call('ZSCORE', key, ARGV[3]) and redis.call('ZCARD', key) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', key, now() + tonumber(ARGV[5]), ARGV[3])
keep(key)
return 1
