-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, queue, lists... Drops every waiting message; returns how many.
local total = 0
for i = 3, #ARGV do
  total = total + redis.call('LLEN', prefix .. ARGV[i])
  redis.call('DEL', prefix .. ARGV[i])
end
return total
