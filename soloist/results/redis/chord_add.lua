-- Keys (the schema opens results/redis.py): chord:<chord id> HASH member index -> record;
-- chord:<chord id>:last STRING the index of the member whose add completed the hash.
-- ARGV: prefix, ttl in ms, then chord id, index, size, record for each member. Returns,
-- for each, every member's record in index order to the member whose add completed the
-- set, else false (see ResultStore.chord_add_many).
local out = {}
for i = 3, #ARGV, 4 do
  local key, index, size = prefix .. 'chord:' .. ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('HSETNX', key, index, ARGV[i + 3]) == 1 then
    redis.call('PEXPIRE', key, ARGV[2])
    if redis.call('HLEN', key) == size then
      redis.call('SET', key .. ':last', index, 'PX', ARGV[2])
    end
  end
  if redis.call('GET', key .. ':last') == index then
    local all, bodies = redis.call('HGETALL', key), {}
    for j = 1, #all, 2 do bodies[tonumber(all[j]) + 1] = all[j + 1] end
    out[#out + 1] = bodies
  else
    out[#out + 1] = false
  end
end
return out
