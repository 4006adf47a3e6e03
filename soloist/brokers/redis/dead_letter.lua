-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, id, receipt, reason. Returns 1, or `unleased` when not held.
local queue = held(ARGV[2], ARGV[3])
if not queue then return unleased(ARGV[2]) end
bury(queue, ARGV[2], ARGV[4])
return 1
