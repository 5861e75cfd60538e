"""The Lua scripts of the Redis history: appending an event, reading a replay snapshot,
and sweeping idle channels, each one atomic inside Redis.  Plain strings, so a
publisher may load them without Twisted (see ``extras/publisher.py``)."""

# The history's epoch, created on first use.
_EPOCH = """
local function get_epoch(p, t)
  local epoch = redis.call('GET', p .. ':epoch')
  if not epoch then
    epoch = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', p .. ':epoch', epoch)
  end
  return epoch
end
"""

# Deletes one whole channel stream, remembering its newest seq as "dropped".
_DROP = """
local function drop(p, ch)
  local last = redis.call('XREVRANGE', p .. ':ch:' .. ch, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local seq = tonumber(string.match(last[1][1], '^(%d+)'))
    if seq > tonumber(redis.call('GET', p .. ':dropped') or '0') then
      redis.call('SET', p .. ':dropped', seq)
    end
  end
  redis.call('DEL', p .. ':ch:' .. ch)
  redis.call('HDEL', p .. ':evicted', ch)
  redis.call('ZREM', p .. ':channels', ch)
end
"""

APPEND = _EPOCH + _DROP + """
local p, ch, data, name, pid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local size, ttl, maxch = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = get_epoch(p, t)
local pidkey = nil
if pid ~= '' then
  pidkey = p .. ':pid:' .. ch .. ':' .. pid
  local seen = redis.call('GET', pidkey)
  if seen then return {epoch, seen, 1, 0} end
end
local seq = redis.call('INCR', p .. ':seq')
local key = p .. ':ch:' .. ch
redis.call('XADD', key, seq .. '-0', 'd', data, 'e', name, 't', now)
local evicted = nil
if size > 0 then
  local extra = redis.call('XLEN', key) - size
  if extra > 0 then
    for _, entry in ipairs(redis.call('XRANGE', key, '-', '+', 'COUNT', extra)) do
      redis.call('XDEL', key, entry[1])
      evicted = entry[1]
    end
  end
end
if ttl > 0 then
  for _, entry in ipairs(redis.call('XRANGE', key, '-', '+', 'COUNT', 16)) do
    if tonumber(entry[2][6]) >= now - ttl then break end
    redis.call('XDEL', key, entry[1])
    evicted = entry[1]
  end
end
if evicted then
  redis.call('HSET', p .. ':evicted', ch, string.match(evicted, '^(%d+)'))
end
redis.call('ZADD', p .. ':channels', now, ch)
if maxch > 0 and redis.call('ZCARD', p .. ':channels') > maxch then
  local oldest = redis.call('ZRANGE', p .. ':channels', 0, 0)
  if oldest[1] ~= ch then drop(p, oldest[1]) end
end
if pidkey then
  redis.call('SET', pidkey, seq, 'PX', ttl > 0 and ttl or 86400000)
end
local receivers = redis.call('PUBLISH', p .. ':ev:' .. ch,
                             epoch .. '\\n' .. seq .. '\\n' .. name .. '\\n' .. data)
return {epoch, tostring(seq), 0, receivers}
"""

SINCE = _EPOCH + """
local p, claimed, after, limit, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = get_epoch(p, t)
local head = redis.call('GET', p .. ':seq') or '0'
local unknown = 0
if claimed ~= epoch or tonumber(after) > tonumber(head) then
  if claimed ~= '' then unknown = 1 end
  after = '0'
end
local dropped = tonumber(redis.call('GET', p .. ':dropped') or '0')
local lost = 0
local names = {}
local all = nil
for i = 6, #ARGV do
  local name = ARGV[i]
  if string.find(name, '*', 1, true) then
    if not all then all = redis.call('ZRANGE', p .. ':channels', 0, -1) end
    local lp = '^' .. string.gsub(string.gsub(name, '[%-%.%+]', '%%%0'), '%*', '.*') .. '$'
    for _, c in ipairs(all) do
      if string.match(c, lp) then names[c] = true end
    end
    if dropped > tonumber(after) then lost = 1 end
  elseif redis.call('EXISTS', p .. ':ch:' .. name) == 1 then
    names[name] = true
  elseif dropped > tonumber(after) then
    lost = 1
  end
end
local out = {epoch, head, tostring(unknown), tostring(lost), tostring(now), after}
for c, _ in pairs(names) do
  local key = p .. ':ch:' .. c
  local entries
  if limit > 0 then
    entries = redis.call('XREVRANGE', key, '+', '(' .. after .. '-0', 'COUNT', limit)
  else
    entries = redis.call('XREVRANGE', key, '+', '(' .. after .. '-0')
  end
  table.insert(out, c)
  table.insert(out, redis.call('HGET', p .. ':evicted', c) or '0')
  table.insert(out, entries)
end
return out
"""

SWEEP = _DROP + """
local p, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', p .. ':channels', '-inf', now - ttl, 'LIMIT', 0, 500)
for _, ch in ipairs(old) do drop(p, ch) end
return #old
"""
