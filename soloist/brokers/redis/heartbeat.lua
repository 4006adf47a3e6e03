-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, worker id, info, ttl in ms.
local key = prefix .. 'w:' .. ARGV[2]
redis.call('HSET', key, 'info', ARGV[3], 'seen', now_text())
redis.call('PEXPIRE', key, ARGV[4])
redis.call('ZADD', prefix .. 'workers', now() + tonumber(ARGV[4]) / 1000, ARGV[2])
redis.call('ZREMRANGEBYSCORE', prefix .. 'workers', '-inf', now_text())
return 0
