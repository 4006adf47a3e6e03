-- Keys (the schema opens results/redis.py): kv:<key> STRING a coordination value.
-- ARGV: prefix, key, expected, delete (1/0), value, ttl in ms. Returns 1 if swapped.
local key = prefix .. 'kv:' .. ARGV[2]
if redis.call('GET', key) ~= ARGV[3] then return 0 end
if ARGV[4] == '1' then
  redis.call('DEL', key)
else
  redis.call('SET', key, ARGV[5], 'PX', ARGV[6])
end
return 1
