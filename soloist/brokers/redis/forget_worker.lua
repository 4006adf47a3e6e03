-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, worker id.
redis.call('ZREM', prefix .. 'workers', ARGV[2])
redis.call('DEL', prefix .. 'w:' .. ARGV[2])
return 0
