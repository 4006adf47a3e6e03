-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, lists... Returns the sum of their lengths.
local total = 0
for i = 2, #ARGV do total = total + redis.call('LLEN', prefix .. ARGV[i]) end
return total
