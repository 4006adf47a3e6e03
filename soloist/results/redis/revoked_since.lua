-- Keys (the schema opens results/redis.py): revoked:at, revoked:until, revoked:terminate
-- (named by prune_revocations.lua, which runs first).
-- ARGV: prefix, since. Returns {id, revoked at, terminate (0/1), …}, oldest first.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', at, ARGV[2], '+inf')) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('ZSCORE', at, id)
  out[#out + 1] = redis.call('SISMEMBER', term, id)
end
return out
