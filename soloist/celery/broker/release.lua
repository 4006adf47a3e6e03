-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then tag, receipt for each: back to the right of its list, uncounted.
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  local lease = held(tag, ARGV[i + 1])
  if lease then
    local text = unwrap(drop(tag))
    if text then redis.call('RPUSH', prefix .. lease.l, text) end
    count_down(tag)
  end
end
return 0
