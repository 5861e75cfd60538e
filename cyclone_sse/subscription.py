"""The subscription protocol, once for every transport: attach → wait until the broker
delivers the channels → replay from history → hand the replay and the live events held
meanwhile to the subscriber, exactly once, with the gap signal when replay cannot be
complete.

Attaching first means nothing published while the replay is read is lost; skipping
held events the replay already contains means nothing is sent twice.  A transport
(SSE stream, long-poll, WebSocket) subclasses ``Subscriber`` and calls
``Subscriptions.open`` / ``close``; it never talks to the history or the broker.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cyclone_sse.event import CHANNEL_EVENT, Event, EventId, Position, encode
from cyclone_sse.history.base import DEFAULT_REPLAY_LIMIT, GAP_UNAVAILABLE, Replay
from cyclone_sse.interfaces import IBroker, IHistory, ISubscriber
from cyclone_sse.registry import ChannelRegistry

log = Logger()

#: Live events one connection may hold while its replay is being fetched.
MAX_HELD = 10000


class Subscriber:
    """The replay→live hand-over state every transport shares.

    Until ``release`` the live events are held; afterwards ``unseen`` drops those a
    replay already handed over.  A stream over one order (one store, or one shard of a
    Redis Cluster history) keeps one position; a stream whose channels live on several
    shards (``sharded``) keeps one per shard, and writes the whole position as each
    event's id (``ids_for``).  Subclasses implement ``ISubscriber``.
    """

    #: None, or an ``auth.access.Access``: asked per channel its patterns reach.
    access: Any = None
    #: Its channels live on several shards: ``handed``, ``heads`` and ``floor`` then
    #: hold, per shard, the newest event handed over, the store's head when the replay
    #: was read, and where the client stands without what was handed (its claim while
    #: the replay is written, the heads once it is).
    sharded = False
    shard = ""  # the one shard of an unsharded stream on a Cluster history
    _replay_ids: tuple[list[Event], list[str]] | None = None

    def __init__(self) -> None:
        self.live = False
        self.held: list[Event] = []
        self.last_seq = 0  # newest event handed to the client: later ones only
        self.epoch = ""    # the history epoch last_seq belongs to
        self.head_seq = 0  # the store's newest seq when the replay was read

    def unseen(self, events: list[Event]) -> list[Event] | None:
        """The events not handed over yet, or None when that is all of them (the usual
        case).  A replay may already have sent the first events of a batch published
        in the same reactor turn; a new history epoch starts its sequence again."""
        last_seq = self.last_seq
        if events[0].seq > last_seq:
            self.last_seq = events[-1].seq
            return None
        epoch = events[0].epoch
        if epoch != self.epoch:
            self.epoch, self.last_seq = epoch, events[-1].seq
            return None
        if events[-1].seq > last_seq:
            self.last_seq = events[-1].seq
        return [e for e in events if e.seq > last_seq]

    def _unseen_per_shard(self, events: list[Event]) -> list[Event] | None:
        """``unseen`` of a ``sharded`` stream (set on it by ``release``)."""
        first = events[0]
        known = self.handed.get(first.shard)
        if known is None or first.seq > known.seq or first.epoch != known.epoch:
            self.handed[first.shard] = events[-1]
            return None
        if events[-1].seq > known.seq:
            self.handed[first.shard] = events[-1]
        return [e for e in events if e.seq > known.seq]

    def hold(self, events: list[Event]) -> bool:
        """Keep ``events`` for later while the replay is not in; False if too many."""
        self.held.extend(events)
        return len(self.held) <= MAX_HELD

    def release(self, replay: Replay, last_id: str | None = None) -> list[Event]:
        """Replayed events followed by the held ones that are newer; live from now on."""
        heads = replay.head.ids if replay.head is not None else ()
        if len(heads) > 1:
            return self._release_sharded(replay, heads, last_id)
        events = list(replay.events)
        last_seq = events[-1].seq if events else 0
        events.extend(e for e in self.held if e.seq > last_seq)
        self.held = []
        self.live = True
        # Only what was handed over counts: an event announced late (Redis) or still
        # queued for fan-out (this reactor turn) and not in the replay is still to come.
        self.last_seq = events[-1].seq if events else 0
        if heads:
            self.epoch, self.head_seq = heads[0].epoch, heads[0].seq
            if heads[0].shard:
                self.shard = heads[0].shard
        return events

    def _release_sharded(self, replay: Replay, heads: tuple[EventId, ...],
                         last_id: str | None) -> list[Event]:
        events = list(replay.events)
        newest: dict[str, Event] = {}  # per shard, the last replayed event
        for event in events:
            newest[event.shard] = event
        for event in self.held:
            known = newest.get(event.shard)
            if known is None or event.seq > known.seq or event.epoch != known.epoch:
                events.append(event)
                newest[event.shard] = event
        self.held = []
        self.live = True
        self.sharded = True
        # (an instance attribute: the one-order streams' unseen stays free of the test)
        self.unseen = self._unseen_per_shard  # type: ignore[method-assign]
        self.heads = {i.shard: i for i in heads}
        # each event's id is the whole position after it: from where the client stood
        # (its claim, or the start of a shard it cannot resume), then the heads
        claimed = Position.parse(last_id)
        floor = {}
        for shard, head in self.heads.items():
            mine = claimed.get(shard) if claimed is not None else None
            floor[shard] = head if last_id is None else \
                mine if mine is not None and mine.epoch == head.epoch else \
                EventId(head.epoch, 0, shard)
        self.floor, self.handed = floor, {}
        self._replay_ids = (events, self.ids_for(events))
        self.handed, self.floor = newest, dict(self.heads)
        return events

    def position(self) -> Position:
        """Where the client stands: per shard, after what it was handed, and after what
        the store held (``floor``)."""
        ids = []
        for shard, floor in self.floor.items():
            mine = self.handed.get(shard)
            newer = mine is not None and (mine.epoch != floor.epoch or mine.seq > floor.seq)
            ids.append(mine if newer else floor)
        ids.extend(e for shard, e in self.handed.items() if shard not in self.floor)
        return Position.of(ids)

    def ids_for(self, events: list[Event]) -> list[str]:
        """The id each of ``events`` carries on a ``sharded`` stream: the position
        after it (written per subscriber, since the other shards' part is its own)."""
        replayed = self._replay_ids
        if replayed is not None and replayed[0] is events:
            self._replay_ids = None
            return replayed[1]
        ids = []
        for event in events:
            self.handed[event.shard] = event
            ids.append(str(self.position()))
        return ids

    def framed(self, events: list[Event], tagged: bool = False) -> bytes:
        """SSE frames of a ``sharded`` stream: each event's body under its position."""
        parts = []
        for event, text in zip(events, self.ids_for(events), strict=True):
            if tagged:
                parts.append(encode(None, event.channel, CHANNEL_EVENT))
            parts.append(b"id: %s\n%s" % (text.encode("ascii"), event.body))
        return b"".join(parts)

    def resume_id(self) -> str | None:
        """Where this client resumes from: after everything it was handed, and after
        everything the store held when it went live (None before that)."""
        if not self.live:
            return None
        if self.sharded:
            return str(self.position())
        if not self.epoch:
            return None
        return str(EventId(self.epoch, max(self.last_seq, self.head_seq), self.shard))


class Subscriptions:
    """Opens and closes subscriptions against one registry, broker and history."""

    def __init__(self, registry: ChannelRegistry, broker: IBroker, history: IHistory,
                 replay_limit: int = DEFAULT_REPLAY_LIMIT) -> None:
        self.registry = registry
        self.broker = broker
        self.history = history
        self.replay_limit = replay_limit

    def open(self, subscriber: ISubscriber, channels: list[str],
             last_id: str | None) -> defer.Deferred[None]:
        """Subscribe ``subscriber`` to ``channels`` (validated and authorized by the
        caller), resuming after ``last_id`` (the client's position, or None).

        The Deferred fires once the subscriber is live (or gone meanwhile)."""
        self.registry.attach(subscriber, channels)
        d: defer.Deferred[Any] = self.broker.when_subscribed(channels)
        if d.called and getattr(self.history, "synchronous", False) and \
                not isinstance(d.result, Failure):
            # Nothing to wait for and a history that answers at once: in place, without
            # the Deferred chain (a reconnect storm opens thousands of these)
            try:
                replay = self.history.since(channels, last_id, self.replay_limit)
            except Exception:
                replay = self._history_failed(Failure(), last_id)
            self._replayed(replay, subscriber, last_id)
            return d
        d.addCallback(lambda _: self.history.since(channels, last_id, self.replay_limit))
        d.addErrback(self._history_failed, last_id)
        d.addCallback(self._replayed, subscriber, last_id)
        return d

    def close(self, subscriber: ISubscriber) -> None:
        """The client is gone (or answered): forget it."""
        self.registry.detach(subscriber)
        subscriber.disconnected()

    def _history_failed(self, failure: Failure, last_id: str | None) -> Replay:
        """The history store is unreachable: go live, and say replay was impossible."""
        log.warn("replay unavailable: {error}", error=failure.getErrorMessage())
        return Replay(gap=GAP_UNAVAILABLE if last_id else None)

    def _replayed(self, replay: Replay, subscriber: ISubscriber, last_id: str | None) -> None:
        if not self.registry.is_attached(subscriber):
            return  # the client left while the history answered
        access = subscriber.access
        if access is not None:  # a pattern never replays more than names would
            replay.events = [e for e in replay.events if access.may_read(e.channel)]
        if last_id:
            counters = self.registry.counters
            counters.replays += 1
            counters.replayed_events += len(replay.events)
            if replay.gap:
                counters.replay_gaps += 1
        subscriber.start_live(replay, last_id)
