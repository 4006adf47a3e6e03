-- Keys (the schema opens results/redis.py): slots:<key> ZSET holder -> when its slot
-- lapses (server clock). keep() is keep_slots.lua's, which runs first.
-- ARGV: prefix, ttl (seconds), then key, holder for each slot.
for i = 3, #ARGV, 2 do
  local key = prefix .. 'slots:' .. ARGV[i]
  local until_ = redis.call('ZSCORE', key, ARGV[i + 1])
  if until_ and tonumber(until_) > now() then
    redis.call('ZADD', key, now() + tonumber(ARGV[2]), ARGV[i + 1])
    keep(key)
  end
end
