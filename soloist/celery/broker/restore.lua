-- Keys: the schema opens prelude.lua, which runs before this file; claim.lua runs after it.
-- restore_lapsed(visibility timeout, steps (comma-separated)) restores up to 100 lapsed
-- unacked entries, Soloist's and Celery workers' alike, as kombu's restore_visible does.
local function restore_lapsed(vt, steps)
  local lapsed = redis.call('ZRANGEBYSCORE', index, '-inf', now() - vt, 'LIMIT', 0, 100)
  for _, tag in ipairs(lapsed) do
    local lease = redis.call('HGET', leases, tag)
    local entry = drop(tag)
    if entry then
      local text, message, exchange, rkey = unwrap(entry)
      local list
      if lease then
        list = cjson.decode(lease).l
      elseif text then
        -- Held by a Celery worker: its queue from kombu's binding table, as kombu would.
        local queue = rkey
        local table_key = prefix .. '_kombu.binding.' .. tostring(exchange)
        local bound = {}
        if redis.call('TYPE', table_key).ok == 'set' then
          bound = redis.call('SMEMBERS', table_key)
        end
        for _, member in ipairs(bound) do
          local rk, rest = string.match(member, '^(.-)' .. SEP .. '(.*)$')
          if rk == rkey and rest then queue = string.match(rest, '^.-' .. SEP .. '(.*)$') end
        end
        local pri = tonumber((message.properties or {}).priority) or 0
        local step = 0
        for s in string.gmatch(steps, '[^,]+') do
          if tonumber(s) <= pri then step = tonumber(s) end
        end
        list = queue
        if step ~= 0 then list = queue .. SEP .. step end
      end
      if text and list then
        redis.call('RPUSH', prefix .. list, text)
      else
        bury('?', '', tag, entry, 'unacked entry is not a kombu message', 0)
      end
    end
  end
end
