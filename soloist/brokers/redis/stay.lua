-- Keys: the schema opens prelude.lua, which runs before this script.
-- ARGV: prefix, ticket, wait (ms). A fetcher whose last wait timed out waits again: if its
-- ticket still stands (nothing was handed over nor woke it, and its grace has not run
-- out), it lives `wait` ms more and 1 is returned, with no claim (nothing came: it would
-- have taken the ticket). Else "" goes in the inbox, so the BLPOP after this in the same
-- write returns at once (after anything handed over), and 0: the fetcher claims.
local ticket = ARGV[2]
if redis.call('PEXPIRE', ticket, tonumber(ARGV[3]) + TICKET_GRACE) == 1 then return 1 end
deliver(ticket, '')
return 0
