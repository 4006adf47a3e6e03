-- Keys (the schema opens results/redis.py): slots:<key> ZSET holder -> when its slot
-- lapses (server clock).
-- Not a script: the start of acquire_slot.lua and renew_slots.lua, keep(key) keeping a
-- slots ZSET as long as its latest slot.
local function keep(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, math.ceil(tonumber(last[2]) * 1000)) end
end
