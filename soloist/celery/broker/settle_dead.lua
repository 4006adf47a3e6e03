-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue, requeue (1/0), then tags (none: all). Returns how many it settled.
local queue, requeue = ARGV[2], ARGV[3] == '1'
local tags = {}
for i = 4, #ARGV do tags[#tags + 1] = ARGV[i] end
if #ARGV < 4 then tags = redis.call('ZRANGE', dead_index(queue), 0, 999) end
local done = 0
for _, tag in ipairs(tags) do
  local raw = redis.call('HGET', dead_store(queue), tag)
  if raw then
    local d = cjson.decode(raw)
    redis.call('HDEL', dead_store(queue), tag)
    redis.call('ZREM', dead_index(queue), tag)
    if requeue then redis.call('LPUSH', prefix .. (d.l ~= '' and d.l or queue), d.b) end
    done = done + 1
  end
end
return done
