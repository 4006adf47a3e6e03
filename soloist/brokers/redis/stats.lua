-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue. Returns {depth, delayed, in flight, dead letters, lost}.
local queue = ARGV[2]
local delayed = redis.call('ZCOUNT', qkey(queue, 'delayed'), '(' .. now_text(), '+inf')
local in_flight = redis.call('ZCOUNT', qkey(queue, 'leased'), '(' .. now_text(), '+inf')
local depth = redis.call('ZCARD', qkey(queue, 'ready'))
  + redis.call('ZCARD', qkey(queue, 'delayed'))
  + redis.call('ZCARD', qkey(queue, 'leased')) - in_flight
local lost = tonumber(redis.call('GET', qkey(queue, 'lost'))) or 0
return {depth, delayed, in_flight, redis.call('ZCARD', qkey(queue, 'dead')), lost}
