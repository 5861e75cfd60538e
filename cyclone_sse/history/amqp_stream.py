"""The history of ``--history=amqp-stream``: a RabbitMQ stream (``x-queue-type:
stream``) is the durable, shared log every event is appended to, once, whoever
published it; each daemon reads the stream in order and keeps it in memory, bounded
like the memory store, and serves replay from there.  An event's id is its stream
offset (plus one), the same on every daemon, so one ``Last-Event-ID`` resumes on any
daemon, and after a restart (which reads the stream again from its start)."""

from __future__ import annotations

import hashlib

from zope.interface import implementer

from cyclone_sse.event import Event
from cyclone_sse.history.memory import MemoryHistory
from cyclone_sse.interfaces import IHistory, IStats


def stream_epoch(stream: str) -> str:
    """The epoch of the ids of a stream: named after the stream, the same for every
    daemon that reads it (a stream deleted and declared again starts its offsets anew
    under the same name: see README "RabbitMQ")."""
    return hashlib.sha1(stream.encode("utf-8")).hexdigest()[:6]


@implementer(IHistory, IStats)
class StreamHistory(MemoryHistory):
    """A daemon's copy of the stream: events are stored as the stream gives them, at
    their offset (``store``); ``append`` is not for publishers (they publish to the
    exchange, and the event comes back through the stream)."""

    #: Offsets + 1 below this were gone from the stream when this daemon first read it
    #: (its retention dropped them): a client that missed one of them is told of a gap.
    floor = 0

    def store(self, seq: int, channel: str, data: str, name: str | None,
              publisher_id: str | None) -> tuple[Event, bool]:
        """Keep the stream's event at ``seq`` (its offset + 1).  A repeated publisher
        id is not stored again (every daemon reads the same order, so every daemon
        skips the same copy): ``(first, False)``."""
        self.skip(seq - 1)
        known = channel in self._logs
        event, fresh = MemoryHistory.append(self, channel, data, name, publisher_id)
        if not known and self.floor:
            self._logs[channel].evicted_upto = self.floor
        self.skip(seq)
        return event, fresh

    def skip(self, seq: int) -> None:
        """An offset that holds no event (a daemon's sync mark, an unreadable message):
        the head moves past it."""
        if not self._seq and not self.floor and seq > 1:
            # the first offset read from the stream's start: what came before is gone
            self.floor = self._dropped_upto = seq - 1
        if seq > self._seq:
            self._seq = seq

    def stats(self) -> dict[str, object]:
        found = super().stats()
        found["name"] = "amqp-stream"
        return found
