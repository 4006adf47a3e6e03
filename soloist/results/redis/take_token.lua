-- Keys (the schema opens results/redis.py): tokens:<key> ZSET one member per token
-- taken -> when (server clock).
-- ARGV: prefix, key, limit, per (seconds). Returns the seconds to wait, '0' when taken
-- (a string: Lua numbers come back truncated to integers).
local key = prefix .. 'tokens:' .. ARGV[2]
local limit, per = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now() - per)
local n = redis.call('ZCARD', key)
if n >= limit then
  local nth = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return tostring(math.max(tonumber(nth[2]) + per - now(), 0.001))
end
redis.call('ZADD', key, now(), now() .. ':' .. n)
redis.call('PEXPIRE', key, math.ceil(per * 1000))
return '0'
