
local function get_epoch(p, t)
  local epoch = redis.call('GET', p .. ':epoch')
  if not epoch then
    epoch = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', p .. ':epoch', epoch)
  end
  return epoch
end

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

local function drop(p, ch)
  local last = redis.call('XREVRANGE', p .. ':ch:' .. ch, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local seq = tonumber(string.match(last[1][1], '^(%d+)'))
    if seq > tonumber(redis.call('GET', p .. ':dropped') or '0') then
      redis.call('SET', p .. ':dropped', seq)
    end
  end
  local held = redis.call('ZSCORE', p .. ':sizes', ch)
  if held then
    if redis.call('DECRBY', p .. ':bytes', math.floor(tonumber(held))) < 0 then
      redis.call('SET', p .. ':bytes', 0)
    end
    redis.call('ZREM', p .. ':sizes', ch)
  end
  redis.call('DEL', p .. ':ch:' .. ch)
  redis.call('HDEL', p .. ':evicted', ch)
  redis.call('ZREM', p .. ':channels', ch)
end

local p, ch, data, name, pid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local size, ttl, maxch = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local maxbytes, chbytes = tonumber(ARGV[9] or '0'), tonumber(ARGV[10] or '0')
local raw = ARGV[11] == '1'
local announce, acks = ARGV[12] or 'PUBLISH', ARGV[13] or (p .. ':raw-stored')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = get_epoch(p, t)
local pidkey = nil
if pid ~= '' then
  pidkey = p .. ':pid:' .. ch .. ':' .. pid
  local seen = redis.call('GET', pidkey)
  if seen then return {epoch, seen, 1, 0, tonumber(redis.call('GET', p .. ':bytes') or '0')} end
end
local seq = redis.call('INCR', p .. ':seq')
local key = p .. ':ch:' .. ch
redis.call('XADD', key, seq .. '-0', 'd', data, 'e', name, 't', now)
account(p, ch, ENTRY_OVERHEAD + #data + #name)
if size > 0 then
  for _ = 1, redis.call('XLEN', key) - size do evict_oldest(p, ch) end
end
if ttl > 0 then
  -- at most 16 past their age per append (the sweep takes whole idle channels); the
  -- oldest alone is read, since it is nearly always still young
  for _ = 1, 16 do
    local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if #oldest == 0 or tonumber(oldest[1][2][6]) >= now - ttl then break end
    evict_oldest(p, ch)
  end
end
if chbytes > 0 then
  while tonumber(redis.call('ZSCORE', p .. ':sizes', ch)) > chbytes
        and redis.call('XLEN', key) > 1 do
    evict_oldest(p, ch)
  end
end
redis.call('ZADD', p .. ':channels', seq, ch)
if maxch > 0 and redis.call('ZCARD', p .. ':channels') > maxch then
  local oldest = redis.call('ZRANGE', p .. ':channels', 0, 0)
  if oldest[1] ~= ch then drop(p, oldest[1]) end
end
if maxbytes > 0 then
  -- past the total budget the largest channel gives first: one busy publisher cannot
  -- flush everyone else's replay
  local rounds = 0
  while tonumber(redis.call('GET', p .. ':bytes') or '0') > maxbytes and rounds < 100000 do
    rounds = rounds + 1
    local largest = redis.call('ZREVRANGE', p .. ':sizes', 0, 0)
    if #largest == 0 then break end
    if not evict_oldest(p, largest[1]) then
      redis.call('ZREM', p .. ':sizes', largest[1])  -- an empty stream holds nothing
    end
  end
end
if pidkey then
  redis.call('SET', pidkey, seq, 'PX', ttl > 0 and ttl or 86400000)
end
local message = epoch .. '\n' .. seq .. '\n' .. name .. '\n' .. data
local receivers = redis.call(announce, p .. ':ev:' .. ch, message)
if announce == 'SPUBLISH' then
  receivers = receivers + redis.call('SPUBLISH', p .. ':all', ch .. '\n' .. message)
end
if raw then
  redis.call('PUBLISH', acks, redis.sha1hex(ch .. '\n' .. data))
end
return {epoch, tostring(seq), 0, receivers, tonumber(redis.call('GET', p .. ':bytes'))}
