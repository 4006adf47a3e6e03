-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue.
local queue = ARGV[2]
return redis.call('ZCARD', qkey(queue, 'ready')) + redis.call('ZCARD', qkey(queue, 'delayed'))
  + redis.call('ZCOUNT', qkey(queue, 'leased'), '-inf', now_text())
