"""The Lua scripts of the Redis history: appending an event, reading a replay snapshot,
and sweeping idle channels, each one atomic inside Redis.  Plain strings, so a
publisher may load them without Twisted (see ``extras/publisher.py``).

The Python client (``clients/python``), which cannot import the daemon, ships APPEND
and MIGRATE as files written from here: ``python -m cyclone_sse.history.redis_scripts
clients/python/cyclone_sse_client/lua`` (tests/test_client.py checks they are equal).
"""

import sys
from pathlib import Path

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

# The byte accounts: P:sizes (channel -> bytes held) and P:bytes (all of them).  An
# entry weighs its data and event name plus a fixed cost for the stream entry itself.
_BYTES = """
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
"""

# ARGV: prefix, channel, data, event name, publisher id, events per channel, age (ms),
# channels, bytes in all, bytes per channel, raw (1: acknowledge a raw message on
# P:raw-stored), and for a Redis Cluster shard: SPUBLISH (sharded pub/sub: each event
# also goes to P:all, with its channel, for pattern subscribers) and the channel
# acknowledging raw messages.  The last five may be left out (0: no limit, not raw,
# PUBLISH, P:raw-stored).
APPEND = _EPOCH + _BYTES + _DROP + """
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
local message = epoch .. '\\n' .. seq .. '\\n' .. name .. '\\n' .. data
local receivers = redis.call(announce, p .. ':ev:' .. ch, message)
if announce == 'SPUBLISH' then
  receivers = receivers + redis.call('SPUBLISH', p .. ':all', ch .. '\\n' .. message)
end
if raw then
  redis.call('PUBLISH', acks, redis.sha1hex(ch .. '\\n' .. data))
end
return {epoch, tostring(seq), 0, receivers, tonumber(redis.call('GET', p .. ':bytes'))}
"""

# ARGV: prefix, the client's epoch and seq, limit, age (ms), then the channels and
# patterns.  Replies epoch, head seq, unknown, lost, now (ms), the seq replayed from,
# truncated, then (channel, stream entry) pairs, newest first.  The channels are merged
# through a heap that pulls each stream lazily (batches doubling from 1) and admits a
# channel only once its newest event could be next (P:channels is scored by each
# channel's newest seq), so a replay reads about what it returns, plus a name match
# per channel for a pattern.
# FOLLOW: run on every (re)connection with the server's replication id.  A primary
# with another id than the one that last wrote here (a replica promoted by a failover,
# a server restarted without its replication state) may hold a shorter history than
# the ids already handed out: a new epoch begins, and P:prev-epoch / P:fork say up to
# which seq the old ids name the same events (SINCE answers them with a gap and the
# events after them, not the whole history).  Returns 1 when it began one.
FOLLOW = """
local p, replid = ARGV[1], ARGV[2]
local known = redis.call('GET', p .. ':replid')
if known == replid then return 0 end
redis.call('SET', p .. ':replid', replid)
local epoch = redis.call('GET', p .. ':epoch')
if not known or not epoch then return 0 end
local t = redis.call('TIME')
redis.call('SET', p .. ':prev-epoch', epoch)
redis.call('SET', p .. ':fork', redis.call('GET', p .. ':seq') or '0')
redis.call('SET', p .. ':epoch', t[1] .. string.format('%06d', tonumber(t[2])))
return 1
"""

SINCE = _EPOCH + """
local p, claimed, after, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = get_epoch(p, t)
local head = redis.call('GET', p .. ':seq') or '0'
local unknown = 0
if claimed ~= '' and claimed ~= epoch and claimed == redis.call('GET', p .. ':prev-epoch') then
  -- an id of the timeline before the primary changed (FOLLOW): both agree up to the
  -- fork, but what the old primary took past it may be gone, and nothing here can
  -- tell: a gap, and the replay from the id (or the fork) on, not from the start
  local fork = redis.call('GET', p .. ':fork') or '0'
  unknown = 1
  if tonumber(after) > tonumber(fork) then after = fork end
elseif claimed ~= epoch or tonumber(after) > tonumber(head) then
  if claimed ~= '' then unknown = 1 end
  after = '0'
end
local dropped = tonumber(redis.call('GET', p .. ':dropped') or '0')
local lost = 0
-- the matched channels with their newest seq, newest first
local seen, cands = {}, {}
local all = nil
local function candidate(c, newest)
  if seen[c] then return end
  seen[c] = true
  if tonumber(redis.call('HGET', p .. ':evicted', c) or '0') > tonumber(after) then lost = 1 end
  cands[#cands + 1] = {c, tonumber(newest)}
end
for i = 6, #ARGV do
  local name = ARGV[i]
  if string.find(name, '*', 1, true) then
    if not all then all = redis.call('ZREVRANGE', p .. ':channels', 0, -1, 'WITHSCORES') end
    local lp = '^' .. string.gsub(string.gsub(name, '[%-%.%+]', '%%%0'), '%*', '.*') .. '$'
    for j = 1, #all, 2 do
      if string.match(all[j], lp) then candidate(all[j], all[j + 1]) end
    end
    if dropped > tonumber(after) then lost = 1 end
  else
    local newest = redis.call('ZSCORE', p .. ':channels', name)
    if newest then
      candidate(name, newest)
    elseif dropped > tonumber(after) then
      lost = 1
    end
  end
end
table.sort(cands, function(a, b) return a[2] > b[2] end)
local floor = '(' .. after .. '-0'
-- entries fetched at a time per channel: 1, then doubling up to what one replay takes
local wanted = limit > 0 and limit + 1 or 1000000
local heap = {}
local function seq_of(cursor) return tonumber(string.match(cursor.batch[cursor.i][1], '^(%d+)')) end
local function sift_up(i)
  while i > 1 do
    local up = math.floor(i / 2)
    if heap[up].seq >= heap[i].seq then return end
    heap[up], heap[i] = heap[i], heap[up]
    i = up
  end
end
local function sift_down(i)
  local n = #heap
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and heap[l].seq > heap[m].seq then m = l end
    if r <= n and heap[r].seq > heap[m].seq then m = r end
    if m == i then return end
    heap[m], heap[i] = heap[i], heap[m]
    i = m
  end
end
-- the cursor's next entry (fetching the next batch when it ran out); false at the floor
local function advance(cursor)
  cursor.i = cursor.i + 1
  if cursor.i > #cursor.batch then
    if cursor.last ~= nil and #cursor.batch < cursor.size then return false end
    local top = cursor.last and ('(' .. cursor.last) or '+'
    if cursor.last then cursor.size = math.min(cursor.size * 2, wanted) end
    cursor.batch = redis.call('XREVRANGE', cursor.key, top, floor, 'COUNT', cursor.size)
    cursor.i = 1
    if #cursor.batch == 0 then return false end
    cursor.last = cursor.batch[#cursor.batch][1]
  end
  cursor.seq = seq_of(cursor)
  return true
end
local function admit(c)
  local cursor = {channel = c, key = p .. ':ch:' .. c, batch = {}, i = 0, size = 1}
  if #cands == 1 then cursor.size = wanted end  -- one channel: one read
  if advance(cursor) then
    heap[#heap + 1] = cursor
    sift_up(#heap)
  end
end
local out = {epoch, head, tostring(unknown), tostring(lost), tostring(now), after, '0'}
local taken, nexti = 0, 1
while true do
  -- a channel joins the merge once its newest event could be the next one out
  while nexti <= #cands and cands[nexti][2] > tonumber(after)
        and (#heap == 0 or cands[nexti][2] >= heap[1].seq) do
    admit(cands[nexti][1])
    nexti = nexti + 1
  end
  if #heap == 0 then break end
  if limit > 0 and taken == limit then out[7] = '1' break end
  local cursor = heap[1]
  table.insert(out, cursor.channel)
  table.insert(out, cursor.batch[cursor.i])
  taken = taken + 1
  if advance(cursor) then
    sift_down(1)
  else
    heap[1] = heap[#heap]
    heap[#heap] = nil
    if #heap > 0 then sift_down(1) end
  end
end
return out
"""

SWEEP = _DROP + """
local p, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for _, ch in ipairs(redis.call('ZRANGE', p .. ':channels', 0, 499)) do
  local last = redis.call('XREVRANGE', p .. ':ch:' .. ch, '+', '-', 'COUNT', 1)
  if #last > 0 and tonumber(last[1][2][6]) >= now - ttl then break end
  drop(p, ch)
  n = n + 1
end
return n
"""

# Brings a history written by an older cyclone-sse to the current layout, once:
# P:channels scored by newest seq (it was the publish time) and the byte accounts.
MIGRATE = _BYTES + """
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
"""


#: The scripts a publisher writing straight into Redis needs, by file name.
FOR_PUBLISHERS = {"append.lua": APPEND, "migrate.lua": MIGRATE}

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in FOR_PUBLISHERS.items():
        (folder / name).write_text(body)
