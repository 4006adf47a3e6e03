-- Keys: the schema opens prelude.lua; it and restore.lua run before this script.
-- ARGV: prefix, max_count, lease, receipt, max_deliveries, poison format, visibility
-- timeout, steps, then list, queue for each list in the order served. Returns {wait_ms,
-- tag, queue, message, delivery count, ...}; wait_ms (when nothing was claimed) is how long
-- until the first unacked entry lapses (-1: none).
local want, lease, receipt = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local max_deliveries, poison = tonumber(ARGV[5]), ARGV[6]
local vt, steps = tonumber(ARGV[7]), ARGV[8]
restore_lapsed(vt, steps)
local out, got, alone = {0}, 0, false
for i = 9, #ARGV, 2 do
  if got >= want or alone then break end
  local list, queue = ARGV[i], ARGV[i + 1]
  local key = prefix .. list
  while got < want do
    local text = redis.call('RPOP', key)
    if not text then break end
    local ok, message = pcall(cjson.decode, text)
    local tag = ok and type(message) == 'table' and type(message.properties) == 'table'
      and message.properties.delivery_tag
    if type(tag) ~= 'string' then
      bury(queue, list, 'soloist-' .. receipt .. '-' .. got .. '-' .. redis.call('LLEN', key),
        text, 'not a kombu message (no delivery tag)', 0)
    else
      local seen = tonumber(redis.call('HGET', counts, tag)) or 0
      -- A message back from a lapsed lease goes out alone (see base.Broker.fetch).
      if seen > 0 and got > 0 then
        redis.call('RPUSH', key, text)
        alone = true
        break
      end
      if seen >= max_deliveries then
        bury(queue, list, tag, text, string.format(poison, seen), seen + 1)
      else
        local info = message.properties.delivery_info or {}
        local exchange, rkey = info.exchange or '', info.routing_key or queue
        local score = stamp(now() + lease - vt)
        redis.call('HSET', unacked, tag,
          '[' .. text .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(rkey) .. ']')
        redis.call('ZADD', index, score, tag)
        redis.call('HSET', leases, tag, cjson.encode({r = receipt, s = score, l = list, q = queue}))
        redis.call('HSET', counts, tag, seen + 1)
        redis.call('ZADD', counted, now(), tag)
        out[#out + 1] = tag
        out[#out + 1] = queue
        out[#out + 1] = text
        out[#out + 1] = seen + 1
        got = got + 1
        if seen > 0 then alone = true; break end
      end
    end
  end
end
if got == 0 then
  local stale = redis.call('ZRANGEBYSCORE', counted, '-inf', now() - 86400, 'LIMIT', 0, 100)
  for _, tag in ipairs(stale) do uncount(tag) end
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if first[2] then
    out[1] = math.max(math.ceil((tonumber(first[2]) + vt - now()) * 1000), 1)
  else
    out[1] = -1
  end
end
return out
