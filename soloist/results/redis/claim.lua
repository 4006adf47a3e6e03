-- Keys (the schema opens results/redis.py): kv:<key> STRING a coordination value.
-- Coordination (see ResultStore). ARGV: prefix, key, value, ttl in ms. Returns the value
-- in place, or nil when this call set it.
local key = prefix .. 'kv:' .. ARGV[2]
local old = redis.call('GET', key)
if old then return old end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
return false
