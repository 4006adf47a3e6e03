-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, ticket, queues... A fetcher stops waiting for the queues: its ticket and
-- its places among their waiters are dropped, and its inbox emptied. Returns the messages
-- that were in it (still leased to it: the caller releases them).
local ticket = ARGV[2]
redis.call('DEL', ticket)
for i = 3, #ARGV do redis.call('LREM', qkey(ARGV[i], 'waiters'), '0', ticket) end
local inbox = ticket .. ':in'
local left = redis.call('LRANGE', inbox, '0', '-1')
redis.call('DEL', inbox)
return left
