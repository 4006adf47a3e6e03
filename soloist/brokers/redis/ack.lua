-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then id, receipt for each delivery. Returns, for each, 1 if acked, 0 if
-- another lease holds it, 2 if it is gone (acked already).
local acked, ids_of, keys, done = {}, {}, {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local queue = held(id, ARGV[i + 1])
  if queue and not done[id] then
    done[id] = true
    ids_of[queue] = ids_of[queue] or {}
    table.insert(ids_of[queue], id)
    keys[#keys + 1] = mkey(id)
    acked[#acked + 1] = 1
  elseif redis.call('EXISTS', mkey(id)) == 0 then
    acked[#acked + 1] = 2
  else
    acked[#acked + 1] = 0
  end
end
for queue, ids in pairs(ids_of) do
  -- A held message is leased, or back in ready if its lease lapsed and a claim moved it
  -- there without taking it.
  if variadic('ZREM', qkey(queue, 'leased'), ids) < #ids then
    variadic('ZREM', qkey(queue, 'ready'), ids)
    variadic('ZREM', qkey(queue, 'delayed'), ids)
  end
end
variadic('DEL', false, keys)
return acked
