-- Keys (the schema opens results/redis.py): revoked:at ZSET id -> revoked at;
-- revoked:until ZSET id -> expires at; revoked:terminate SET.
-- Not a script: the start of log_revocation.lua and revoked_since.lua, which drops the
-- expired entries of the revocation log and names its keys (at, till, term).
local at, till = prefix .. 'revoked:at', prefix .. 'revoked:until'
local term = prefix .. 'revoked:terminate'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', till, '-inf', now())) do
  redis.call('ZREM', at, id)
  redis.call('ZREM', till, id)
  redis.call('SREM', term, id)
end
