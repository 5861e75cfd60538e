
local ENTRY_OVERHEAD = 64
local function weigh(fields)
  local w = ENTRY_OVERHEAD
  for i = 1, #fields, 2 do
    if fields[i] == 'd' or fields[i] == 'e' then w = w + #fields[i + 1] end
  end
  return w
end
local function account(p, ch, w)
  if tonumber(redis.call('ZINCRBY', p .. ':sizes', w, ch)) < 0 then
    redis.call('ZADD', p .. ':sizes', 0, ch)
  end
  if redis.call('INCRBY', p .. ':bytes', w) < 0 then redis.call('SET', p .. ':bytes', 0) end
end
local function evict_oldest(p, ch)
  local key = p .. ':ch:' .. ch
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  if #first == 0 then return false end
  redis.call('XDEL', key, first[1][1])
  account(p, ch, -weigh(first[1][2]))
  redis.call('HSET', p .. ':evicted', ch, string.match(first[1][1], '^(%d+)'))
  return true
end

local p = ARGV[1]
if redis.call('GET', p .. ':layout') == '2' then return 0 end
for _, ch in ipairs(redis.call('ZRANGE', p .. ':channels', 0, -1)) do
  local key = p .. ':ch:' .. ch
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then
    redis.call('ZADD', p .. ':channels', string.match(last[1][1], '^(%d+)'), ch)
    local w = 0
    for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do w = w + weigh(entry[2]) end
    redis.call('ZADD', p .. ':sizes', w, ch)
    redis.call('INCRBY', p .. ':bytes', w)
  end
end
redis.call('SET', p .. ':layout', '2')
return 1
