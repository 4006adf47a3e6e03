-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then id, receipt for each delivery.
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local queue = held(id, ARGV[i + 1])
  if queue then
    unplace(queue, id)
    redis.call('HSET', mkey(id), 'r', '')
    redis.call('HINCRBY', mkey(id), 'n', -1)
    make_ready(queue, id)
    wake(queue)
  end
end
return 0
