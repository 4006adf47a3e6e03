-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, then tag, receipt for each delivery. Returns 1 for each one acked.
local out = {}
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  if held(tag, ARGV[i + 1]) then
    drop(tag)
    uncount(tag)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
