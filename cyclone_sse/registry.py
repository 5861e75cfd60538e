"""The channel registry: which subscribers listen to which channels, and fan-out.

It knows neither HTTP nor brokers.  Brokers are told, through ``listeners``, when a
channel or pattern gains its first subscriber or loses its last one, so they can
subscribe upstream only to what someone here listens to.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cyclone_sse.channels import PatternIndex, is_pattern
from cyclone_sse.event import Event
from cyclone_sse.interfaces import ISubscriber

log = Logger()

#: Seconds between heartbeat comments on idle streams; 0 disables them.
DEFAULT_HEARTBEAT = 15.0
#: Seconds a stopping registry waits for closed streams to flush before giving up.
SHUTDOWN_GRACE = 2.0

ChannelListener = Callable[[str, bool], None]  # (channel or pattern, first: bool)


@dataclass(slots=True)
class Counters:
    """Monotonic totals shown by /stats and exported to Graphite."""

    events_published: int = 0
    deliveries: int = 0
    replays: int = 0
    replayed_events: int = 0
    replay_gaps: int = 0
    slow_disconnects: int = 0
    connections_total: int = 0
    request_timeouts: int = 0
    refused_pipelined: int = 0
    client_publishes: int = 0
    refused_client_publishes: int = 0
    grip_recoveries: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


#: Upper bounds (seconds) of the fan-out latency histogram's buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Counts of observations per bucket (for Prometheus), their sum and number."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, observations <= le)]``, ending with ``+Inf``."""
        total, out = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


def _beyond(groups: list[set[ISubscriber]],
            direct: set[ISubscriber] | None) -> Collection[ISubscriber]:
    """The subscribers of the matching patterns' ``groups`` that are not among the
    channel's ``direct`` subscribers, each once (a lone group is itself: no set is
    made)."""
    if not direct and len(groups) == 1:
        return groups[0]
    reached: set[ISubscriber] = set().union(*groups)
    return reached - direct if direct else reached


class ChannelRegistry(Service):
    """Channels → subscribers, fan-out coalesced per reactor turn, and the counters.

    As a service it beats the heartbeat while running and, when stopped, closes every
    connection so clients reconnect elsewhere."""

    def __init__(self, clock: IReactorTime, heartbeat: float = DEFAULT_HEARTBEAT) -> None:
        self.clock: Any = clock
        self.heartbeat_interval = heartbeat
        self.started_at = clock.seconds()
        self.counters = Counters()
        self.listeners: list[ChannelListener] = []
        # channel → its subscribers; pattern → its subscribers, and the patterns indexed
        self._channels: dict[str, set[ISubscriber]] = {}
        self._patterns: dict[str, set[ISubscriber]] = {}
        self._index = PatternIndex()
        # channel → subscriber sets of the patterns matching it (rebuilt lazily)
        self._pattern_cache: dict[str, list[set[ISubscriber]]] = {}
        self._subscriptions: dict[ISubscriber, tuple[str, ...]] = {}
        self._heartbeat: LoopingCall | None = None
        self._drained: defer.Deferred[None] | None = None
        self._pending: list[Event] = []  # one channel's events, not fanned out yet
        self._batch_since = 0.0  # when the first of them was queued
        self.latency = Histogram()
        self._flush_call: Any = None
        self._after_fan_out: list[Any] = []  # called once the queued events are out

    # membership --------------------------------------------------------------------

    def attach(self, subscriber: ISubscriber, channels: Iterable[str]) -> None:
        names = tuple(channels)
        self._subscriptions[subscriber] = names
        self.counters.connections_total += 1
        for name in names:
            if is_pattern(name):
                entry = self._patterns.get(name)
                if entry is None:
                    entry = self._patterns[name] = set()
                    self._index.add(name)
                    self._pattern_cache.clear()
                    self._notify(name, True)
                entry.add(subscriber)
            else:
                subs = self._channels.get(name)
                if subs is None:
                    subs = self._channels[name] = set()
                    self._notify(name, True)
                subs.add(subscriber)

    def detach(self, subscriber: ISubscriber) -> None:
        for name in self._subscriptions.pop(subscriber, ()):
            self._drop(subscriber, name)
        if self._drained is not None and not self._subscriptions:
            drained, self._drained = self._drained, None
            drained.callback(None)

    def leave(self, subscriber: ISubscriber, names: Iterable[str]) -> None:
        """Stop ``subscriber`` listening to some of its channels (a WebSocket
        unsubscribe); the rest stay.  ``detach`` ends the whole subscription."""
        held = self._subscriptions.get(subscriber)
        if held is None:
            return
        gone = set(names).intersection(held)
        self._subscriptions[subscriber] = tuple(n for n in held if n not in gone)
        for name in gone:
            self._drop(subscriber, name)

    def _drop(self, subscriber: ISubscriber, name: str) -> None:
        if is_pattern(name):
            subs = self._patterns[name]
            subs.discard(subscriber)
            if not subs:
                del self._patterns[name]
                self._index.remove(name)
                self._pattern_cache.clear()
                self._notify(name, False)
        else:
            subs = self._channels[name]
            subs.discard(subscriber)
            if not subs:
                del self._channels[name]
                self._notify(name, False)

    def is_attached(self, subscriber: ISubscriber) -> bool:
        return subscriber in self._subscriptions

    def _notify(self, name: str, first: bool) -> None:
        for listener in self.listeners:
            listener(name, first)

    # fan-out -----------------------------------------------------------------------

    def deliver(self, event: Event) -> int:
        """``queue`` the event, and say how many subscribers it will reach (for the
        answer to a publish)."""
        self.queue(event)
        return self.audience(event.channel)

    def queue(self, event: Event) -> None:
        """Queue one event for fan-out at the end of this reactor turn.

        Consecutive events of one channel published in the same turn go out as one
        joined write per subscriber: when publishing outpaces the fan-out, the daemon
        pays one ``send()`` per subscriber per batch instead of per event.  A change of
        channel flushes the batch first, so every stream still sees publish order.
        """
        if self._pending and self._pending[-1].channel != event.channel:
            self._fan_out()  # (it starts a new list; the turn's timer stays set)
        if not self._pending:
            self._batch_since = self.clock.seconds()
        self._pending.append(event)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)
        self.counters.events_published += 1

    @property
    def fan_out_pending(self) -> bool:
        """Whether events are queued for the fan-out at the end of this reactor turn."""
        return self._flush_call is not None

    def after_fan_out(self, call: Any) -> None:
        """``call()`` once the queued events are fanned out (at the end of this turn)."""
        self._after_fan_out.append(call)

    def flush(self) -> None:
        """Fan out the queued batch: the hot path.  One frame (encoded once per event,
        joined once per batch) is written to every subscriber, with no copy of the
        subscriber set and no logging."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        self._fan_out()
        if self._after_fan_out:
            waiting, self._after_fan_out = self._after_fan_out, []
            for call in waiting:
                call()

    def _fan_out(self) -> None:
        events = self._pending
        if not events:
            return
        self._pending = []
        frame = events[0].frame if len(events) == 1 else b"".join(e.frame for e in events)
        channel = events[0].channel
        subs = self._channels.get(channel)
        count = 0
        if subs:
            for subscriber in subs:
                subscriber.deliver(events, frame)
            count = len(subs)
        if self._patterns:
            count += self._deliver_to_patterns(channel, events, frame, subs)
        self.counters.deliveries += count * len(events)
        if count:  # once per batch: from the first event queued to the last write
            self.latency.observe(self.clock.seconds() - self._batch_since)

    def subscribers_of(self, channel: str) -> list[ISubscriber]:
        """Every subscriber an event on ``channel`` reaches (by name or pattern)."""
        found = dict.fromkeys(self._channels.get(channel, ()))
        if self._patterns:
            for group in self._matching_groups(channel):
                found.update(dict.fromkeys(group))
        return list(found)

    def _matching_groups(self, channel: str) -> list[set[ISubscriber]]:
        groups = self._pattern_cache.get(channel)
        if groups is None:
            patterns = self._patterns
            groups = [patterns[name] for name in self._index.matching(channel)]
            self._pattern_cache[channel] = groups
            if len(self._pattern_cache) > 10000:
                self._pattern_cache.clear()
        return groups

    def _deliver_to_patterns(self, channel: str, events: list[Event], frame: bytes,
                             direct: set[ISubscriber] | None) -> int:
        groups = self._matching_groups(channel)
        if not groups:
            return 0
        count = 0
        for subscriber in _beyond(groups, direct):
            # A pattern reaches only what its subscriber may read by name.
            access = subscriber.access
            if access is None or access.may_read(channel):
                subscriber.deliver(events, frame)
                count += 1
        return count

    # heartbeats and shutdown -------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> defer.Deferred[None]:
        """Close every stream (clients reconnect elsewhere); fires once they are gone
        or ``SHUTDOWN_GRACE`` passed."""
        super().stopService()
        if self.connections:
            log.info("closing {count} open connections", count=self.connections)
        d = self.stop()
        d.addTimeout(SHUTDOWN_GRACE, self.clock, onTimeoutCancel=lambda *_: None)
        return d

    def start(self) -> None:
        if self.heartbeat_interval and self._heartbeat is None:
            self._heartbeat = LoopingCall(self._beat)
            self._heartbeat.clock = self.clock
            self._heartbeat.start(self.heartbeat_interval, now=False)

    def _beat(self) -> None:
        for subscriber in self._subscriptions:
            subscriber.heartbeat()

    def stop(self) -> defer.Deferred[None]:
        """Stop heartbeats and close every connection so clients reconnect elsewhere.

        The Deferred fires once every subscriber has detached."""
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None
        self.flush()
        if not self._subscriptions:
            return defer.succeed(None)
        self._drained = defer.Deferred()
        drained = self._drained
        self.close_all()
        return drained

    def close_all(self) -> int:
        """Close every connection: each client resumes with its own last event id (a
        daemon stopping, or one that cannot tell its clients what they missed)."""
        subscribers = list(self._subscriptions)
        for subscriber in subscribers:
            subscriber.close()
        return len(subscribers)

    # introspection -----------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._subscriptions)

    def names(self) -> list[str]:
        """Every channel and pattern somebody here listens to."""
        return [*self._channels, *self._patterns]

    def audience(self, channel: str) -> int:
        """How many local subscribers an event on ``channel`` would reach now."""
        direct = self._channels.get(channel)
        groups = self._matching_groups(channel) if self._patterns else None
        named = len(direct) if direct else 0
        return named + len(_beyond(groups, direct)) if groups else named

    def subscriber_counts(self) -> list[tuple[str, int]]:
        """``[(channel or pattern, subscribers)]``, the original /stats list."""
        pairs = [(name, len(subs)) for name, subs in self._channels.items()]
        pairs.extend((name, len(subs)) for name, subs in self._patterns.items())
        pairs.sort()
        return pairs

    def uptime(self) -> float:
        return self.clock.seconds() - self.started_at
