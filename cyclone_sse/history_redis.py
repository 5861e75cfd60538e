"""Durable history in Redis, shared by every daemon of a deployment.

Layout under a key prefix ``P`` (``--redis-prefix``):

``P:epoch``            this history's epoch (set once; changes only if Redis loses its data)
``P:seq``              the global sequence: one order for all channels
``P:ch:<channel>``     a Stream per channel, entry id ``<seq>-0``, fields d(ata) e(vent) t(ime ms)
``P:evicted``          hash channel → highest seq trimmed from its stream
``P:channels``         sorted set channel → last publish time (for patterns and the cap)
``P:dropped``          highest seq of any whole stream dropped by the channel cap or age
``P:pid:<ch>:<id>``    a publisher's own id, for de-duplication
``P:ev:<channel>``     pub/sub channel on which each stored event is announced

Appending and reading are Lua scripts, so a replay is one consistent snapshot and the
announcement order on ``P:ev:*`` is the sequence order.
"""

from __future__ import annotations

import heapq
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from cyclone_sse.event import Event
from cyclone_sse.history import GAP_EXPIRED, GAP_LIMIT, GAP_UNKNOWN, Replay
from cyclone_sse.interfaces import IHistory
from cyclone_sse.redis_client import RedisLink

DEFAULT_PREFIX = "cyclone-sse"

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


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(IHistory)
class RedisHistory:
    """Events and ids in Redis: valid across daemons and daemon restarts."""

    def __init__(self, link: RedisLink, prefix: str = DEFAULT_PREFIX, size: int = 1000,
                 ttl: float = 3600.0, channels: int = 10000) -> None:
        self.link = link
        self.prefix = prefix
        self.size = size
        self.ttl_ms = int(ttl * 1000)
        self.max_channels = channels
        self._scripts: dict[str, str] = {}

    @defer.inlineCallbacks
    def load_scripts(self, connection: Any = None) -> Any:
        """SCRIPT LOAD once per connection; EVALSHA afterwards."""
        for name, body in (("append", APPEND), ("since", SINCE), ("sweep", SWEEP)):
            if connection is not None:
                sha = yield connection.execute_command("SCRIPT", "LOAD", body)
            else:
                sha = yield self.link.command("SCRIPT", "LOAD", body)
            self._scripts[name] = _text(sha)

    def _run(self, name: str, *args: Any) -> defer.Deferred[Any]:
        d = self.link.when_ready()
        d.addCallback(lambda _: self.link.raw_command("EVALSHA", self._scripts[name], 0,
                                                      self.prefix, *args))
        return d

    def append(self, channel: str, data: str, name: str | None = None,
               publisher_id: str | None = None) -> defer.Deferred[tuple[Event, bool]]:
        d = self._run("append", channel, data, name or "", publisher_id or "", self.size,
                      self.ttl_ms, self.max_channels)
        d.addCallback(self._appended, channel, data, name)
        return d

    @staticmethod
    def _appended(reply: list[Any], channel: str, data: str,
                  name: str | None) -> tuple[Event, bool]:
        epoch, seq, duplicate = _text(reply[0]), int(reply[1]), int(reply[2])
        return Event(channel, data, f"{epoch}-{seq}", seq, name), not duplicate

    def split_id(self, event_id: str | None) -> tuple[str, str]:
        """(epoch, seq) of one of our ids; ('', '0') when it cannot be one."""
        if not event_id:
            return "", "0"
        epoch, _, seq = event_id.rpartition("-")
        if not epoch or not seq.isdigit() or len(seq) > 15:
            return "?", "0"
        return epoch, seq

    def since(self, channels: list[str], last_id: str | None,
              limit: int = 5000) -> defer.Deferred[Replay]:
        epoch, after = self.split_id(last_id)
        d = self._run("since", epoch, after, limit, self.ttl_ms, *channels)
        d.addCallback(self._replay, bool(last_id), limit)
        return d

    def _replay(self, reply: list[Any], asked: bool, limit: int) -> Replay:
        epoch, head = _text(reply[0]), int(reply[1])
        unknown, lost, now, after = int(reply[2]), int(reply[3]), int(reply[4]), int(reply[5])
        replay = Replay(head_id=f"{epoch}-{head}", head_seq=head)
        if not asked:
            return replay
        expired = bool(lost)
        truncated = False
        oldest_kept = now - self.ttl_ms if self.ttl_ms else None
        per_channel: list[list[Event]] = []
        rest = reply[6:]
        for i in range(0, len(rest), 3):
            channel, evicted, entries = _text(rest[i]), int(rest[i + 1]), rest[i + 2]
            if evicted > after:
                expired = True
            if limit and len(entries) >= limit:
                truncated = True
            events = []
            for entry_id, fields in reversed(entries):
                values = dict(zip(fields[::2], fields[1::2], strict=False))
                if oldest_kept is not None and int(values[b"t"]) < oldest_kept:
                    expired = True  # past its age; the next append will trim it
                    continue
                seq = int(_text(entry_id).partition("-")[0])
                name = _text(values[b"e"]) or None
                events.append(Event(channel, _text(values[b"d"]), f"{epoch}-{seq}", seq, name))
            if events:
                per_channel.append(events)
        merged = list(heapq.merge(*per_channel, key=lambda e: e.seq))
        if limit and len(merged) > limit:
            merged = merged[-limit:]
            truncated = True
        replay.events = merged
        if unknown:
            replay.gap = GAP_UNKNOWN
        elif expired:
            replay.gap = GAP_EXPIRED
        elif truncated:
            replay.gap = GAP_LIMIT
        replay.truncated = truncated
        return replay

    def start(self) -> None:
        self.link.start()

    def stop(self) -> defer.Deferred[None]:
        return self.link.stop()

    def sweep(self) -> defer.Deferred[Any] | None:
        """Drop whole channels idle for longer than the age limit."""
        if not self.ttl_ms or not self.link.connected or "sweep" not in self._scripts:
            return None
        d = self._run("sweep", self.ttl_ms)
        d.addErrback(lambda _: None)  # the next sweep will try again
        return d

    def stats(self) -> dict[str, object]:
        return {"store": "redis", "connected": self.link.connected}
