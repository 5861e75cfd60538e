"""What every history store shares: the ``Replay`` value, the replay rule, retention
defaults, and the periodic sweep run as a child service."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime

from cyclone_sse.event import Event, EventId, Position

#: Defaults, documented in README.rst with their options.  0 disables a bound.
DEFAULT_SIZE = 1000          # events kept per channel
DEFAULT_TTL = 3600.0         # seconds an event is kept
DEFAULT_CHANNELS = 10000     # channels kept; the least recently published go first
DEFAULT_REPLAY_LIMIT = 5000  # events one reconnect may replay
DEFAULT_BYTES = 128 * 1024 * 1024        # bytes of events kept in all (memory store)
DEFAULT_CHANNEL_BYTES = 8 * 1024 * 1024  # bytes of events kept per channel
#: Seconds between sweeps of expired history.
SWEEP_INTERVAL = 60.0

GAP_EXPIRED = "expired"  # some missed events fell out of the retention window
GAP_UNKNOWN = "unknown"  # the id is not from this store (restart, other store, garbage)
GAP_LIMIT = "limit"      # more was missed than one replay may send; the newest are sent
GAP_UNAVAILABLE = "unavailable"  # the history store could not be reached


@dataclass
class Replay:
    """What a reconnecting client missed.

    ``gap`` is None when ``events`` is exactly everything it missed; otherwise it says
    why replay cannot be complete and ``events`` holds what is still retained.
    ``head`` is the store's newest position at the time of the call, one id per shard
    the channels live on (None when the store could not be asked).
    """

    events: list[Event] = field(default_factory=list)
    gap: str | None = None
    head: Position | None = None
    truncated: bool = False


def resume_point(last_id: str | None, head: EventId) -> tuple[int, bool]:
    """``(seq to replay after, unknown)`` for a client's ``last_id`` against a store
    whose newest id is ``head``.  An id from another epoch, or from the future, cannot
    be placed: the client gets everything retained, and is told."""
    asked = EventId.parse(last_id)
    if asked is None or asked.epoch != head.epoch or asked.seq > head.seq:
        return 0, True
    return asked.seq, False


def assemble(head: EventId | Position, tails: Iterable[list[Event]], limit: int, *, unknown: bool,
             expired: bool, truncated: bool = False) -> Replay:
    """The replay rule, the same for every store.

    ``tails`` are the channels' retained events after the client's position, each
    oldest first; they are merged into publish order, and at most ``limit`` (the
    newest) are sent.  The gap reported is the most serious one: ``unknown`` (the
    position itself is lost), then ``expired`` (events fell out of retention), then
    ``limit`` (more was missed than one replay sends).
    """
    newer = [tail for tail in tails if tail]
    events = list(heapq.merge(*newer, key=lambda e: e.seq)) if len(newer) > 1 else \
        (newer[0] if newer else [])
    if limit and len(events) > limit:
        events = events[-limit:]
        truncated = True
    gap = GAP_UNKNOWN if unknown else GAP_EXPIRED if expired else GAP_LIMIT if truncated \
        else None
    if isinstance(head, EventId):
        head = Position((head,))
    return Replay(events, gap, head, truncated)


class SweptStore(MultiService):
    """A store whose ``sweep()`` runs every ``SWEEP_INTERVAL`` seconds while it is
    running (a ``TimerService`` child, so it stops with the daemon)."""

    def __init__(self, clock: IReactorTime, interval: float = SWEEP_INTERVAL) -> None:
        super().__init__()
        self.clock = clock
        sweeper = TimerService(interval, self.sweep)
        sweeper.clock = clock
        sweeper.setServiceParent(self)

    def sweep(self) -> Any:
        """Drop what retention no longer keeps."""
