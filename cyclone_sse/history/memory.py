"""The in-memory history store, the product default: bounded per-channel logs in this
process.  Its epoch is random per process, so after a restart an old id reads as
unknown (and the client is told) instead of being misread."""

from __future__ import annotations

import heapq
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from itertools import islice, takewhile

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from cyclone_sse.channels import compile_pattern, is_pattern
from cyclone_sse.event import Event, EventId, Position
from cyclone_sse.history.base import (
    DEFAULT_BYTES,
    DEFAULT_CHANNEL_BYTES,
    DEFAULT_CHANNELS,
    DEFAULT_REPLAY_LIMIT,
    DEFAULT_SIZE,
    DEFAULT_TTL,
    Replay,
    SweptStore,
    assemble,
    resume_point,
)
from cyclone_sse.interfaces import IHistory, IStats

#: What keeping an event costs beyond its frame and data (objects, deque slot, id).
EVENT_OVERHEAD = 256


def cost(event: Event) -> int:
    """Bytes an event holds while retained (its frame, its data, the objects)."""
    return len(event.frame) + len(event.data) + EVENT_OVERHEAD


class _ChannelLog:
    __slots__ = ("by_publisher_id", "bytes", "events", "evicted_upto")

    def __init__(self) -> None:
        self.bytes = 0
        # (stored at, event, publisher's own id or None)
        self.events: deque[tuple[float, Event, str | None]] = deque()
        self.evicted_upto = 0
        self.by_publisher_id: dict[str, Event] = {}


def _newer_than(log: _ChannelLog, after: int) -> Iterator[Event]:
    """A log's events after ``after``, newest first, lazily."""
    return takewhile(lambda e: e.seq > after, (entry[1] for entry in reversed(log.events)))


def _newest_first(event: Event) -> int:
    return -event.seq


def _tail(log: _ChannelLog, after: int, limit: int) -> tuple[list[Event], bool]:
    """One log's newest events after ``after`` (at most ``limit``), oldest first, and
    whether there were more."""
    tail: list[Event] = []
    for _, event, _ in reversed(log.events):
        if event.seq <= after:
            break
        if limit and len(tail) == limit:
            tail.reverse()
            return tail, True
        tail.append(event)
    tail.reverse()
    return tail, False


@implementer(IHistory, IStats)
class MemoryHistory(SweptStore):
    """Per-channel logs in this process, bounded in count, age, channels and bytes (per
    channel and in all); lost on restart.

    Past the total byte budget the largest channel gives up its oldest events first, so
    one busy publisher cannot flush everyone else's replay."""

    #: ``append`` answers at once (no Deferred): a local broker may publish in place.
    synchronous = True

    def __init__(self, clock: IReactorTime, size: int = DEFAULT_SIZE,
                 ttl: float = DEFAULT_TTL, channels: int = DEFAULT_CHANNELS,
                 epoch: str | None = None, max_bytes: int = DEFAULT_BYTES,
                 channel_bytes: int = DEFAULT_CHANNEL_BYTES) -> None:
        super().__init__(clock)
        self.size = size
        self.ttl = ttl
        self.max_channels = channels
        self.max_bytes = max_bytes
        self.channel_bytes = channel_bytes
        self.bytes = 0
        self._largest: list[tuple[int, str]] = []  # heap of (-bytes, channel), lazily kept
        self.epoch = epoch or secrets.token_hex(3)
        self._seq = 0
        self._logs: OrderedDict[str, _ChannelLog] = OrderedDict()
        # Highest seq evicted with a whole channel log: ids older than this may have
        # lost events on channels we no longer know about.
        self._dropped_upto = 0

    @property
    def head(self) -> EventId:
        """The newest id handed out (seq 0 before the first event)."""
        return EventId(self.epoch, self._seq)

    # writing -----------------------------------------------------------------------

    def append(self, channel: str, data: str, name: str | None = None,
               publisher_id: str | None = None) -> tuple[Event, bool]:
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _ChannelLog()
            if self.max_channels and len(self._logs) > self.max_channels:
                _, dropped = self._logs.popitem(last=False)
                self.bytes -= dropped.bytes
                if dropped.events:
                    self._dropped_upto = max(self._dropped_upto, dropped.events[-1][1].seq)
        else:
            self._logs.move_to_end(channel)
            if publisher_id is not None:
                previous = log.by_publisher_id.get(publisher_id)
                if previous is not None:
                    return previous, False
        now = self.clock.seconds()
        if self.ttl and log.events:
            self._expire(log, now)
        self._seq += 1
        event = Event(channel, data, EventId(self.epoch, self._seq), name)
        log.events.append((now, event, publisher_id))
        size = cost(event)
        log.bytes += size
        self.bytes += size
        if publisher_id is not None:
            log.by_publisher_id[publisher_id] = event
        if self.size and len(log.events) > self.size:
            self._evict_oldest(log)
        while self.channel_bytes and log.bytes > self.channel_bytes and len(log.events) > 1:
            self._evict_oldest(log)
        if self.max_bytes:
            heapq.heappush(self._largest, (-log.bytes, channel))
            if self.bytes > self.max_bytes:
                self._evict_from_the_largest()
            elif len(self._largest) > 4 * len(self._logs) + 1024:
                self._compact_largest()  # (under budget too: one entry per append)
        return event, True

    def _evict_from_the_largest(self) -> None:
        """Back under the total budget, taking from the largest channel first."""
        while self.bytes > self.max_bytes and self._largest:
            negative, channel = heapq.heappop(self._largest)
            log = self._logs.get(channel)
            if log is None or log.bytes != -negative or not log.events:
                continue  # a stale entry
            self._evict_oldest(log)
            heapq.heappush(self._largest, (-log.bytes, channel))
        if len(self._largest) > 4 * len(self._logs) + 1024:
            self._compact_largest()

    def _compact_largest(self) -> None:
        """Drop the stale entries: one per channel is kept (amortised O(1) per append,
        and the heap stays within a few entries per channel)."""
        self._largest = [(-log.bytes, name) for name, log in self._logs.items()]
        heapq.heapify(self._largest)

    def _evict_oldest(self, log: _ChannelLog) -> None:
        _, event, publisher_id = log.events.popleft()
        size = cost(event)
        log.bytes -= size
        self.bytes -= size
        log.evicted_upto = event.seq
        if publisher_id is not None and log.by_publisher_id.get(publisher_id) is event:
            del log.by_publisher_id[publisher_id]

    def _expire(self, log: _ChannelLog, now: float) -> None:
        if self.ttl:
            limit = now - self.ttl
            while log.events and log.events[0][0] < limit:
                self._evict_oldest(log)

    def sweep(self) -> None:
        """Drop expired events and empty channel logs (run periodically)."""
        now = self.clock.seconds()
        for channel in list(self._logs):
            log = self._logs[channel]
            self._expire(log, now)
            if not log.events:
                del self._logs[channel]
                self._dropped_upto = max(self._dropped_upto, log.evicted_upto)

    # reading -----------------------------------------------------------------------

    def _logs_for(self, channels: Iterable[str]) -> tuple[list[_ChannelLog], bool]:
        """The logs a subscription covers, and whether a named channel has no log."""
        logs: dict[int, _ChannelLog] = {}
        missing = False
        for name in channels:
            if is_pattern(name):
                matcher = compile_pattern(name)
                for channel, log in self._logs.items():
                    if matcher.match(channel):
                        logs[id(log)] = log
            else:
                found = self._logs.get(name)
                if found is None:
                    missing = True
                else:
                    logs[id(found)] = found
        return list(logs.values()), missing

    def since(self, channels: list[str], last_id: str | None,
              limit: int = DEFAULT_REPLAY_LIMIT) -> Replay:
        head = self.head
        if not last_id:
            return Replay(head=Position((head,)))
        after, unknown = resume_point(last_id, head)
        logs, missing = self._logs_for(channels)
        now = self.clock.seconds()
        expired = False
        for log in logs:
            self._expire(log, now)
            expired = expired or log.evicted_upto > after
        # A channel (named, or matched by a pattern) dropped whole may have had events.
        if (missing or any(is_pattern(c) for c in channels)) and self._dropped_upto > after:
            expired = True
        # Missed events are the recent ones: merge the channels newest first, lazily,
        # and stop at the limit, so a replay costs what it returns (plus a step per
        # channel), not everything retained.
        if len(logs) == 1:
            events, truncated = _tail(logs[0], after, limit)
        else:
            merged = heapq.merge(*(_newer_than(log, after) for log in logs),
                                 key=_newest_first)
            events = list(islice(merged, limit or None))
            truncated = bool(limit) and next(merged, None) is not None
            events.reverse()
        return assemble(head, [events], limit, unknown=unknown, expired=expired,
                        truncated=truncated)

    def stats(self) -> dict[str, object]:
        return {"channels": len(self._logs), "bytes": self.bytes,
                "events": sum(len(log.events) for log in self._logs.values())}
