-- Keys (the schema opens results/redis.py): revoked:at, revoked:until, revoked:terminate
-- (named by prune_revocations.lua, which runs first); revoked:n STRING counter;
-- revoked:moved the channel workers listen on.
-- ARGV: prefix, task id, body, ttl in ms, terminate (1/0), as revoke.lua's. Ends without
-- a return (the store appends `return 1`).
redis.call('ZADD', at, now(), ARGV[2])
redis.call('ZADD', till, now() + tonumber(ARGV[4]) / 1000, ARGV[2])
if ARGV[5] == '1' then redis.call('SADD', term, ARGV[2]) else redis.call('SREM', term, ARGV[2]) end
redis.call('INCR', prefix .. 'revoked:n')
redis.call('PUBLISH', prefix .. 'revoked:moved', 1)
