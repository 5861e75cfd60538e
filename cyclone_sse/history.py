"""History: ids in one global order, and the retained events that replay serves.

The in-memory store is the product default.  Ids look like ``5f3a9c-1042``: the
store's epoch (random per process, so an id from before a restart is recognised as
unknown instead of being misread) and a sequence number shared by all channels, so
one id resumes every channel of a stream in publish order.
"""

from __future__ import annotations

import heapq
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from zope.interface import implementer

from cyclone_sse.channels import compile_pattern, is_pattern
from cyclone_sse.event import Event
from cyclone_sse.interfaces import IHistory

#: Defaults, documented in README.rst with their options.  0 disables a bound.
DEFAULT_SIZE = 1000          # events kept per channel
DEFAULT_TTL = 3600.0         # seconds an event is kept
DEFAULT_CHANNELS = 10000     # channels kept; the least recently published go first
DEFAULT_REPLAY_LIMIT = 5000  # events one reconnect may replay

GAP_EXPIRED = "expired"  # some missed events fell out of the retention window
GAP_UNKNOWN = "unknown"  # the id is not from this store (restart, other store, garbage)
GAP_LIMIT = "limit"      # more was missed than one replay may send; the newest are sent
GAP_UNAVAILABLE = "unavailable"  # the history store could not be reached


@dataclass
class Replay:
    """What a reconnecting client missed.

    ``gap`` is None when ``events`` is exactly everything it missed; otherwise it says
    why replay cannot be complete and ``events`` holds what is still retained.
    ``head_id``/``head_seq`` name the newest id at the time of the call.
    """

    events: list[Event] = field(default_factory=list)
    gap: str | None = None
    head_id: str = ""
    head_seq: int = 0
    truncated: bool = False


class _ChannelLog:
    __slots__ = ("by_publisher_id", "events", "evicted_upto")

    def __init__(self) -> None:
        # (stored at, event, publisher's own id or None)
        self.events: deque[tuple[float, Event, str | None]] = deque()
        self.evicted_upto = 0
        self.by_publisher_id: dict[str, Event] = {}


@implementer(IHistory)
class MemoryHistory:
    """Bounded per-channel logs in this process; lost on restart (ids then read as
    unknown, which clients are told about)."""

    def __init__(self, clock, size: int = DEFAULT_SIZE, ttl: float = DEFAULT_TTL,  # type: ignore[no-untyped-def]
                 channels: int = DEFAULT_CHANNELS, epoch: str | None = None) -> None:
        self.clock = clock
        self.size = size
        self.ttl = ttl
        self.max_channels = channels
        self.epoch = epoch or secrets.token_hex(3)
        self._seq = 0
        self._logs: OrderedDict[str, _ChannelLog] = OrderedDict()
        # Highest seq evicted with a whole channel log: ids older than this may have
        # lost events on channels we no longer know about.
        self._dropped_upto = 0

    # ids ---------------------------------------------------------------------------

    def make_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def parse_id(self, event_id: str) -> int | None:
        """The sequence number of one of our ids, or None if it is not ours."""
        epoch, _, seq = event_id.rpartition("-")
        if epoch != self.epoch or not seq.isdigit() or len(seq) > 18:
            return None
        number = int(seq)
        return number if number <= self._seq else None

    @property
    def head_id(self) -> str:
        return self.make_id(self._seq)

    # writing -----------------------------------------------------------------------

    def append(self, channel: str, data: str, name: str | None = None,
               publisher_id: str | None = None) -> tuple[Event, bool]:
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _ChannelLog()
            if self.max_channels and len(self._logs) > self.max_channels:
                _, dropped = self._logs.popitem(last=False)
                if dropped.events:
                    self._dropped_upto = max(self._dropped_upto, dropped.events[-1][1].seq)
        else:
            self._logs.move_to_end(channel)
            if publisher_id is not None:
                previous = log.by_publisher_id.get(publisher_id)
                if previous is not None:
                    return previous, False
        now = self.clock.seconds()
        self._expire(log, now)
        self._seq += 1
        event = Event(channel, data, self.make_id(self._seq), self._seq, name)
        log.events.append((now, event, publisher_id))
        if publisher_id is not None:
            log.by_publisher_id[publisher_id] = event
        if self.size and len(log.events) > self.size:
            self._evict_oldest(log)
        return event, True

    def _evict_oldest(self, log: _ChannelLog) -> None:
        _, event, publisher_id = log.events.popleft()
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
        replay = Replay(head_id=self.head_id, head_seq=self._seq)
        if not last_id:
            return replay
        after = self.parse_id(last_id)
        if after is None:
            replay.gap = GAP_UNKNOWN
            after = 0
        logs, missing = self._logs_for(channels)
        now = self.clock.seconds()
        newer: list[list[Event]] = []
        for log in logs:
            self._expire(log, now)
            if log.evicted_upto > after and replay.gap is None:
                replay.gap = GAP_EXPIRED
            # Missed events are the recent ones: walk back from the newest.
            tail = []
            for _, event, _ in reversed(log.events):
                if event.seq <= after:
                    break
                tail.append(event)
            if tail:
                tail.reverse()
                newer.append(tail)
        if (missing or any(is_pattern(c) for c in channels)) \
                and self._dropped_upto > after and replay.gap is None:
            replay.gap = GAP_EXPIRED
        events = list(heapq.merge(*newer, key=lambda e: e.seq)) if len(newer) > 1 else \
            (newer[0] if newer else [])
        if limit and len(events) > limit:
            replay.truncated = True
            events = events[-limit:]
            replay.gap = replay.gap or GAP_LIMIT
        replay.events = events
        return replay

    def stats(self) -> dict[str, int]:
        return {"channels": len(self._logs),
                "events": sum(len(log.events) for log in self._logs.values())}
