"""The Redis broker (``--broker=redis``): several daemons, one Redis, one history.

* ``POST /publish`` on any daemon stores the event in the Redis history (a Lua script
  assigns its id) and announces it on ``P:ev:<channel>``; every daemon subscribed to
  that channel delivers it.  A daemon subscribes upstream only to the channels (and
  patterns) its own clients listen to.
* ``redis-cli publish base '[1,2,3]'`` (the 2013 way) still works: one daemon, elected
  through a Redis lock, listens to raw channels (``--redis-raw``, default ``*``) and
  stores what it hears like a publish.  Raw pub/sub is fire-and-forget in Redis itself:
  a message published while no daemon holds the lock is lost; ``POST /publish`` is not.
* When the subscriber connection drops, streams stay open; on reconnect the daemon
  subscribes again and delivers, from the history, what was announced meanwhile.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.channels import check_channel, is_pattern
from cyclone_sse.errors import BrokerUnavailable
from cyclone_sse.event import Event, EventId
from cyclone_sse.interfaces import IRedisHistory
from cyclone_sse.links.reconnect import READY_WAIT
from cyclone_sse.links.redis import RedisAddress, RedisLink, ReplyTimeout

log = Logger()

#: Seconds a raw-ingest leader holds its lock without renewing it.
LEADER_LOCK_TTL = 6.0
#: Seconds between renewals (and election attempts).
LEADER_RENEW_INTERVAL = 2.0
#: What any cyclone-sse deployment announces on ``<prefix>:ev:<channel>``: epoch, seq.
_ANNOUNCEMENT = re.compile(rb"\A\d+\n\d+\n")

_LEADER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class RedisBroker(Broker):
    """Fan-out through Redis pub/sub, with the history kept in Redis."""

    name = "redis"
    default_history = "redis"

    def __init__(self, registry: Any, history: Any, settings: Any, reactor: Any = None) -> None:
        super().__init__(registry, history, settings, reactor)
        if not IRedisHistory.providedBy(history):
            raise ValueError("the Redis broker keeps its history in Redis (--history=redis)")
        self.history: Any = history
        self.prefix = history.prefix
        self.raw_pattern = settings.redis_raw
        self.me = secrets.token_hex(8)
        self.leader = False
        # Position (history epoch, seq) of the newest event delivered here.
        self.epoch = ""
        self.last_seq = 0
        self._catching_up: list[Event] | None = None
        self._pending: dict[str, list[defer.Deferred[None]]] = {}
        self.link = RedisLink(self.reactor, history.link.address, "pubsub", on_up=self._up,
                              on_down=self._down, on_message=self.message,
                              timeout=settings.redis_timeout)
        self.link.setServiceParent(self)
        if self.raw_pattern:
            election = TimerService(LEADER_RENEW_INTERVAL, self._campaign)
            election.clock = self.reactor
            election.setServiceParent(self)
        self.raw_warnings = 0
        self.foreign_skipped = 0

    @classmethod
    def check_options(cls, settings: Any) -> None:
        if settings.history != "redis":
            raise ValueError(f"--history={settings.history}: the Redis broker shares its "
                             "history through Redis; use --history=redis")
        if settings.redis_url:
            try:
                RedisAddress.from_url(settings.redis_url)
            except ValueError as exc:
                raise ValueError(f"--redis-url: {exc}") from None

    @property
    def connected(self) -> bool:
        return self.link.connected and self.history.link.connected

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "connected": self.connected,
                "outages": self.link.outages + self.history.link.outages,
                "raw_leader": self.leader, "last_seq": self.last_seq,
                "foreign_skipped": self.foreign_skipped}

    # publishing ---------------------------------------------------------------------

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None) -> defer.Deferred[Published]:
        d: defer.Deferred[Any] = self.history.append(channel, data, name, publisher_id)
        d.addCallbacks(self._stored, self._failed)
        return d

    def _failed(self, failure: Any) -> Any:
        if failure.check(ReplyTimeout):
            # The command may still run when Redis wakes up: a timeout is no refusal.
            raise BrokerUnavailable("Redis did not answer in time: the event may or may not "
                                    "be stored; retry with the same 'id' to publish it "
                                    "exactly once")
        raise BrokerUnavailable(f"not published, retry later: {failure.getErrorMessage()}")

    def _stored(self, appended: tuple[Event, bool]) -> Published:
        # Delivery happens when Redis announces the event, on every daemon alike.
        event, fresh = appended
        return Published(event.channel, event.id, self.registry.audience(event.channel),
                         duplicate=not fresh)

    # upstream subscriptions ---------------------------------------------------------

    def _topic(self, name: str) -> str:
        return f"{self.prefix}:ev:{name}"

    def subscribe(self, channel: str) -> None:
        connection = self.link.connection
        if connection is None:
            return  # done by _up when the link is back
        d = (connection.psubscribe if is_pattern(channel) else connection.subscribe)(
            self._topic(channel))
        d.addBoth(self._subscribed, channel)

    def _subscribed(self, result: Any, channel: str) -> None:
        for waiting in self._pending.pop(channel, []):
            if not waiting.called:
                waiting.callback(None)

    def unsubscribe(self, channel: str) -> None:
        connection = self.link.connection
        if connection is not None:
            (connection.punsubscribe if is_pattern(channel) else connection.unsubscribe)(
                self._topic(channel)).addErrback(lambda _: None)

    def when_subscribed(self, channels: list[str]) -> defer.Deferred[None]:
        """Fires once Redis confirmed the subscriptions, so that reading the history
        afterwards cannot miss an event announced in between."""
        waits = []
        for channel in channels:
            if channel in self._pending:
                d: defer.Deferred[None] = defer.Deferred()
                self._pending[channel].append(d)
                waits.append(d)
        if not waits:
            return defer.succeed(None)
        gathered: defer.Deferred[Any] = defer.gatherResults(waits, consumeErrors=True)
        # Never hold a subscriber through an outage: go on, the catch-up covers it.
        gathered.addTimeout(READY_WAIT, self.reactor, onTimeoutCancel=lambda *_: None)
        return gathered.addCallback(lambda _: None)

    def _on_channel(self, channel: str, first: bool) -> None:
        if first:
            self._pending.setdefault(channel, [])
        super()._on_channel(channel, first)

    # the link comes and goes -----------------------------------------------------

    @defer.inlineCallbacks
    def _up(self, connection: Any) -> Any:
        names = self.registry.names()
        exact = [self._topic(n) for n in names if not is_pattern(n)]
        patterns = [self._topic(n) for n in names if is_pattern(n)]
        if self.leader:
            patterns.append(self.raw_pattern)
        self._catching_up = [] if self.last_seq else None
        if exact:
            yield connection.subscribe(exact)
        if patterns:
            yield connection.psubscribe(patterns)
        for channel in list(self._pending):
            self._subscribed(None, channel)
        if self._catching_up is not None:
            yield self._catch_up(names)
        if self.raw_pattern and not self.leader:
            # At once (once this link counts as up, next turn), not at the next round:
            # raw messages published meanwhile would reach no daemon.
            self.reactor.callLater(0, self._campaign)

    @defer.inlineCallbacks
    def _catch_up(self, names: list[str]) -> Any:
        """Deliver, in order, what was announced while this daemon was cut off."""
        missed: list[Event] = []
        if names:
            try:
                replay = yield self.history.since(
                    names, str(EventId(self.epoch, self.last_seq)), 0)
            except Exception as exc:
                log.warn("could not catch up after reconnecting to redis: {error}", error=exc)
            else:
                epoch = replay.head.epoch
                if epoch != self.epoch:  # Redis lost its data: a new sequence began
                    self.epoch, self.last_seq = epoch, 0
                missed = replay.events
        held, self._catching_up = self._catching_up or [], None
        for event in sorted([*missed, *held], key=lambda e: e.seq):
            self._deliver(event)

    def _down(self) -> None:
        self.leader = False

    # incoming messages --------------------------------------------------------------

    def message(self, pattern: Any, channel: bytes, message: bytes) -> None:
        name = channel.decode("utf-8", "replace")
        topic = self.prefix + ":ev:"
        if name.startswith(topic):
            if pattern is not None and pattern == self.raw_pattern.encode():
                return  # our own announcement, also matched by the raw pattern
            self._announced(name[len(topic):], message)
        elif pattern is not None and not name.startswith(self.prefix + ":"):
            if b":ev:" in channel and _ANNOUNCEMENT.match(message):
                self.foreign_skipped += 1  # another deployment's announcement: not raw
                return
            self._raw(name, message)

    def _announced(self, channel: str, message: bytes) -> None:
        epoch, seq, name, data = message.decode("utf-8").split("\n", 3)
        event = Event(channel, data, EventId(epoch, int(seq)), name or None)
        if epoch != self.epoch:
            # a new history (Redis lost its data): its sequence starts again
            self.epoch, self.last_seq = epoch, 0
        if self._catching_up is not None:
            self._catching_up.append(event)
        else:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        if event.seq > self.last_seq:
            self.last_seq = event.seq
            self.registry.queue(event)  # nobody here needs the audience count

    def _raw(self, channel: str, message: bytes) -> None:
        """A plain ``PUBLISH channel message``: store it as if POSTed."""
        try:
            if len(message) > self.settings.max_body:
                raise ValueError(f"larger than --max-body ({self.settings.max_body} bytes)")
            check_channel(channel)
            data = message.decode("utf-8")
        except Exception as exc:
            self.raw_warnings += 1
            if self.raw_warnings == 1 or self.raw_warnings % 1000 == 0:
                log.warn("ignored raw redis message on {channel!r} ({count} so far): {error}",
                         channel=channel[:200], count=self.raw_warnings, error=exc)
            return
        self.history.append(channel, data).addErrback(
            lambda f: log.warn("raw message on {channel} not stored: {error}",
                               channel=channel, error=f.getErrorMessage()))

    # raw-ingest leadership ----------------------------------------------------------

    @defer.inlineCallbacks
    def _campaign(self) -> Any:
        if not self.connected:
            return
        try:
            won = yield self.history.link.command(
                "EVAL", _LEADER, 1, f"{self.prefix}:raw-leader", self.me,
                int(LEADER_LOCK_TTL * 1000))
        except Exception:
            return
        connection = self.link.connection
        if int(won) and not self.leader and connection is not None:
            self.leader = True
            yield connection.psubscribe(self.raw_pattern)
            log.info("this daemon now stores raw redis messages on {pattern!r}",
                     pattern=self.raw_pattern)
        elif not int(won) and self.leader:
            self.leader = False
            log.info("another daemon now stores raw redis messages")
            if connection is not None:
                yield connection.punsubscribe(self.raw_pattern)
