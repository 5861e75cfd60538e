"""The Redis broker (``--broker=redis``): several daemons, one Redis, one history.

* ``POST /publish`` on any daemon stores the event in the Redis history (a Lua script
  assigns its id) and announces it on ``P:ev:<channel>``; every daemon subscribed to
  that channel delivers it.  A daemon subscribes upstream only to the channels (and
  patterns) its own clients listen to.
* ``redis-cli publish base '[1,2,3]'`` (the 2013 way) still works.  One daemon, elected
  through a Redis lock, listens to the raw channels (``--redis-raw``, default ``*``),
  stores what it hears like a publish and acknowledges each message on
  ``P:raw-stored``.  The others listen, as the 2013 daemons did, only to the raw
  channels their own clients use, and keep what they heard, unacknowledged, for a
  while (``RawStandby``): whoever takes the lock next, after the leader stopped or
  died, first stores what was never acknowledged, so no raw message on a channel
  somebody listens to is lost while a daemon is up.  So only the leader receives
  publishes nobody here wants.
* When the subscriber connection drops, streams stay open; on reconnect the daemon
  subscribes again and delivers, from the history, what was announced meanwhile.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
from collections import Counter, deque
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.channels import compile_pattern, is_pattern
from cyclone_sse.checks import check_message
from cyclone_sse.errors import BrokerUnavailable
from cyclone_sse.event import Event, EventId, Position
from cyclone_sse.interfaces import IRedisHistory
from cyclone_sse.links.redis import RedisAddress, RedisLink, ReplyTimeout
from cyclone_sse.links.redis_cluster import ShardedPubSub, once_done
from cyclone_sse.links.tls import check_link_options

log = Logger()

#: Seconds a raw-ingest leader holds its lock without renewing it.
LEADER_LOCK_TTL = 6.0
#: Seconds between renewals (and election attempts).
LEADER_RENEW_INTERVAL = 2.0
#: Seconds a standby daemon keeps a raw message nobody acknowledged: longer than a
#: dead leader's lock lasts plus an election round.
RAW_STANDBY_SECONDS = 15.0
#: Bytes of unacknowledged raw messages a standby daemon keeps at most.
RAW_STANDBY_BYTES = 16 * 1024 * 1024
#: What any cyclone-sse deployment announces on ``<prefix>:ev:<channel>``: epoch, seq.
_ANNOUNCEMENT = re.compile(rb"\A\d+\n\d+\n")
#: What any deployment sends on ``<prefix>:raw-stored``: a SHA-1, or a leader's marker.
_ACKNOWLEDGEMENT = re.compile(rb"\A(?:[0-9a-f]{40}|sync:[0-9a-f]+)\Z")

_LEADER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def raw_key(channel: bytes, message: bytes) -> str:
    """How a raw message is acknowledged: the SHA-1 the append script sends."""
    return hashlib.sha1(channel + b"\n" + message).hexdigest()


class RawStandby:
    """Raw messages heard while another daemon stores them, until acknowledged: what a
    new leader stores first.  Bounded in age (``RAW_STANDBY_SECONDS``) and bytes."""

    def __init__(self, clock: Any, max_age: float = RAW_STANDBY_SECONDS,
                 max_bytes: int = RAW_STANDBY_BYTES) -> None:
        self.clock = clock
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0  # given up unacknowledged (too old, or past the byte bound)
        self._heard: deque[tuple[float, str, str, str]] = deque()  # (at, key, channel, data)
        self._held: Counter[str] = Counter()   # key -> messages held with it
        self._acked: Counter[str] = Counter()  # key -> how many of those were acknowledged

        self.waiting = 0  # held and not acknowledged

    def heard(self, key: str, channel: str, data: str) -> None:
        now = self.clock.seconds()
        self._heard.append((now, key, channel, data))
        self._held[key] += 1
        self.waiting += 1
        self.bytes += len(data) + len(channel)
        while self._heard and (self._heard[0][0] < now - self.max_age
                               or self.bytes > self.max_bytes):
            if self._pop() is not None:
                self.dropped += 1

    def acknowledged(self, key: str) -> None:
        if self._acked[key] < self._held[key]:
            self._acked[key] += 1  # the oldest held with this key is the one stored
            self.waiting -= 1
        # acknowledgements come in the order heard: what leads is usually done with
        while self._heard and self._acked[self._heard[0][1]]:
            self._pop()

    def take_unacknowledged(self) -> list[tuple[str, str]]:
        """Everything held that nobody acknowledged, oldest first; holds nothing after."""
        taken = []
        while self._heard:
            message = self._pop()
            if message is not None:
                taken.append(message)
        return taken

    def _pop(self) -> tuple[str, str] | None:
        """Drop the oldest message; return it if it was never acknowledged."""
        _, key, channel, data = self._heard.popleft()
        self.bytes -= len(data) + len(channel)
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        if self._acked[key]:
            self._acked[key] -= 1
            if not self._acked[key]:
                del self._acked[key]
            return None
        self.waiting -= 1
        return channel, data


class RedisBroker(Broker):
    """Fan-out through Redis pub/sub, with the history kept in Redis."""

    name = "redis"
    default_history = "redis"
    required_history = "redis"
    history_reason = "the Redis broker shares its history through Redis"
    confirms_subscriptions = True

    def __init__(self, registry: Any, history: Any, settings: Any, reactor: Any = None) -> None:
        super().__init__(registry, history, settings, reactor)
        if not IRedisHistory.providedBy(history):
            raise ValueError("the Redis broker keeps its history in Redis (--history=redis)")
        self.history: Any = history
        self.prefix = history.prefix
        self.raw_pattern = settings.redis_raw
        self.me = secrets.token_hex(8)
        self.leader = False
        self.standby = RawStandby(self.reactor)
        self.raw_recovered = 0  # stored on taking over: heard, never acknowledged
        self._marker: str | None = None  # sent on winning the lock, awaited before leading
        # Per shard ("" without a Cluster), the newest event delivered here (or the
        # history's head, read before the first subscription: where catching up starts)
        self.positions: dict[str, Any] = {}
        self._catching_up: list[Event] | None = None
        self._moved_shards: set[str] = set()  # resubscribed: to catch up next
        self._heads: defer.Deferred[None] | None = None
        self.link = RedisLink(self.reactor, history.link.address, "pubsub", on_up=self._up,
                              on_down=self._down, on_message=self.message,
                              timeout=settings.redis_timeout)
        self.link.setServiceParent(self)
        # On a Cluster announcements come by sharded pub/sub, on the shard's primary;
        # the link above still hears raw messages and acknowledgements (PUBLISH reaches
        # every node of a Cluster).
        self.sharded: ShardedPubSub | None = None
        self._pattern_count = 0
        if history.link.address.cluster:
            self.sharded = ShardedPubSub(self.reactor, history.link, self._sharded_message,
                                         self._moved, settings.redis_timeout)
            self.sharded.setServiceParent(self)
        if self.raw_pattern:
            election = TimerService(LEADER_RENEW_INTERVAL, self._campaign)
            election.clock = self.reactor
            election.setServiceParent(self)
        self.raw_warnings = 0
        self.foreign_skipped = 0
        # raw channels heard as standby: local names, exact and patterns; and whether
        # the raw pattern itself is subscribed (the leader's, or one about to lead)
        self._raw_exact: set[str] = set()
        self._raw_patterns: dict[str, re.Pattern[str]] = {}  # local pattern -> matcher
        self._raw_pattern_on = False

    @classmethod
    def check_options(cls, settings: Any) -> None:
        super().check_options(settings)
        check_link_options(settings, "redis", RedisAddress.from_url)

    @property
    def connected(self) -> bool:
        return self.link.connected and self.history.link.connected and (
            self.sharded is None or self.sharded.ready)

    @property
    def last_seq(self) -> int:
        """The newest seq delivered here (the highest of any shard's)."""
        return max((e.seq for e in self.positions.values()), default=0)

    def stats(self) -> dict[str, object]:
        outages = self.link.outages + self.history.link.outages + (
            self.sharded.outages if self.sharded is not None else 0)
        return {"name": self.name, "connected": self.connected, "outages": outages,
                "raw_leader": self.leader, "raw_standby": self.standby.waiting,
                "raw_recovered": self.raw_recovered, "raw_dropped": self.standby.dropped,
                "last_seq": self.last_seq, "foreign_skipped": self.foreign_skipped,
                # whether this daemon hears every raw channel (the leader) or only its own
                "raw_all": self._raw_pattern_on}

    # publishing ---------------------------------------------------------------------

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None, grip: Any = None) -> defer.Deferred[Published]:
        # (``grip`` stays here: the event comes back through Redis, as plain events do;
        # a GRIP-held client gets it as a frame — see README "Coming from Pushpin")
        d: defer.Deferred[Any] = self.history.append(channel, data, name, publisher_id)
        d.addCallbacks(self._stored, self._failed)
        return d

    def _failed(self, failure: Any) -> Any:
        if failure.check(BrokerUnavailable):
            return failure  # (it says what happened: a link down, a write not durable)
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

    def _shard_topics(self, name: str) -> list[str]:
        """A Cluster's sharded channels announcing ``name``: its shard's, or for a
        pattern every shard's ``all`` (sharded pub/sub has no patterns)."""
        shards = self.history.shards
        if is_pattern(name):
            return [f"{shard.prefix}:all" for shard in shards.values()]
        return [f"{self.history.shard_of(name).prefix}:ev:{name}"]

    def subscribe(self, channel: str) -> None:
        pattern = is_pattern(channel)
        if self.sharded is not None:
            self._pattern_count += pattern
            if not pattern or self._pattern_count == 1:
                sharded, topics = self.sharded, self._shard_topics(channel)
                d = self._read_heads()
                d.addCallback(lambda _: sharded.subscribe(topics))
                d.addBoth(self._subscribed, channel)
            else:
                self._subscribed(None, channel)
        connection = self.link.connection
        if connection is None:
            return  # done by _up when the link is back
        if self.sharded is None:
            d = (connection.psubscribe if pattern else connection.subscribe)(
                self._topic(channel))
            d.addBoth(self._subscribed, channel)
        if self._wants_raw(channel):
            if pattern:
                self._raw_patterns[channel] = compile_pattern(channel)
            else:
                self._raw_exact.add(channel)
            (connection.psubscribe if pattern else connection.subscribe)(channel) \
                .addErrback(lambda _: None)

    def unsubscribe(self, channel: str) -> None:
        pattern = is_pattern(channel)
        if self.sharded is not None:
            self._pattern_count -= pattern
            if not pattern or self._pattern_count == 0:
                self.sharded.unsubscribe(self._shard_topics(channel))
        connection = self.link.connection
        if connection is not None:
            if self.sharded is None:
                (connection.punsubscribe if pattern else connection.unsubscribe)(
                    self._topic(channel)).addErrback(lambda _: None)
            if pattern and self._raw_patterns.pop(channel, None) is not None:
                if not (channel == self.raw_pattern and self._raw_pattern_on):
                    connection.punsubscribe(channel).addErrback(lambda _: None)
            elif not pattern and channel in self._raw_exact:
                self._raw_exact.discard(channel)
                connection.unsubscribe(channel).addErrback(lambda _: None)

    def _wants_raw(self, name: str) -> bool:
        """Whether raw messages on a local channel (or pattern) are heard as standby:
        the names ``--redis-raw`` covers (Redis's glob; a pattern only under ``*``)."""
        if not self.raw_pattern or name.startswith("__"):
            return False
        if is_pattern(name):
            return self.raw_pattern == "*"
        return fnmatch.fnmatchcase(name, self.raw_pattern)

    # the link comes and goes -----------------------------------------------------

    @defer.inlineCallbacks
    def _up(self, connection: Any) -> Any:
        names = self.registry.names()
        announced = names if self.sharded is None else []  # (else: sharded pub/sub)
        exact = [self._topic(n) for n in announced if not is_pattern(n)]
        patterns = [self._topic(n) for n in announced if is_pattern(n)]
        self._raw_exact = {n for n in names if not is_pattern(n) and self._wants_raw(n)}
        self._raw_patterns = {n: compile_pattern(n) for n in names
                              if is_pattern(n) and self._wants_raw(n)}
        self._raw_pattern_on = False
        if self.raw_pattern:
            exact.append(self._acks)
            exact.extend(self._raw_exact)
            patterns.extend(self._raw_patterns)
        if announced and not self.positions:
            yield self._read_heads()
        self._catching_up = [] if announced and self.positions else None
        if exact:
            yield connection.subscribe(exact)
        if patterns:
            yield connection.psubscribe(patterns)
        for channel in list(self._pending):
            self._subscribed(None, channel)
        if self._catching_up is not None:
            yield self._catch_up(announced)
        if self.raw_pattern and not self.leader:
            # At once (once this link counts as up, next turn), not at the next round:
            # raw messages published meanwhile would reach no daemon.
            self.reactor.callLater(0, self._campaign)

    def _read_heads(self) -> defer.Deferred[None]:
        """Before the first subscription: the history's head (every shard's, on a
        Cluster) is where this daemon stands, so that after an outage it catches up
        from there even if it delivered nothing yet.  Read once."""
        if self._heads is None or (self._heads.called and not self.positions):
            d = self.history.since(["*"] if self.sharded else [], None)
            d.addCallback(self._have_heads)
            d.addErrback(lambda _: None)  # (then a later outage asks streams to resume)
            self._heads = d
        return once_done(self._heads)

    def _have_heads(self, replay: Any) -> None:
        for head in replay.head.ids:
            self.positions.setdefault(head.shard, head)

    def _moved(self, topics: list[str]) -> None:
        """Sharded subscriptions made again after their primary went away or their slot
        moved: what their shards announced meanwhile is fetched from the history."""
        shards: set[str] = set()
        for topic in topics:
            shard = self.history.by_prefix.get(topic[:topic.index("}") + 1])
            if shard is not None:
                shards.add(shard.name)
        self._moved_shards |= shards
        if self._catching_up is None:  # (else: once the catch-up under way is done)
            self._catch_up_moved()

    def _catch_up_moved(self, held: list[Event] | None = None) -> None:
        shards, self._moved_shards = self._moved_shards, set()
        names = [n for n in self.registry.names() if is_pattern(n) or
                 self._shard_of(n) in shards]
        self._catching_up = held or []
        if names:
            self._catch_up(names, shards).addErrback(lambda _: None)
        else:
            self._catch_up([], shards)

    def _shard_of(self, channel: str) -> str:
        return self.history.shard_of(channel).name if self.sharded is not None else ""

    @defer.inlineCallbacks
    def _catch_up(self, names: list[str], shards: set[str] | None = None) -> Any:
        """Deliver, in order, what was announced while this daemon was cut off (from
        ``shards``, or all), from the position of the newest event delivered here."""
        missed: list[Event] = []
        known = [e for shard, e in self.positions.items()
                 if shards is None or shard in shards]
        if names and (not known or (shards is not None and len(known) < len(shards))):
            # Nothing delivered here yet from (some of) them: where this daemon stood
            # is unknown, so each client resumes with its own last event id.
            closed = self.registry.close_all()
            log.warn("reconnected to redis with no position to catch up from ({count} "
                     "streams asked to resume)", count=closed)
        elif names:
            try:
                replay = yield self.history.since(names, str(Position.of(known)), 0)
            except Exception as exc:
                log.warn("could not catch up after reconnecting to redis: {error}", error=exc)
            else:
                for head in replay.head.ids:  # Redis lost its data, or the primary changed
                    mine = self.positions.get(head.shard)
                    if mine is not None and mine.epoch != head.epoch:
                        del self.positions[head.shard]
                missed = replay.events
                if replay.gap:
                    # Some of what was announced meanwhile is gone: this daemon cannot
                    # say which to whom.  Each client resumes with its own last id and
                    # its replay says history-gap precisely.
                    closed = self.registry.close_all()
                    log.warn("catching up after reconnecting to redis: {reason} history "
                             "({count} streams asked to resume)", reason=replay.gap,
                             count=closed)
        held, self._catching_up = self._catching_up or [], None
        for event in sorted([*missed, *held], key=lambda e: (e.shard, e.seq)):
            self._deliver(event)
        if self._moved_shards:  # (shards moved again while this one ran)
            self._catch_up_moved()

    def _down(self) -> None:
        self.leader = False
        self._marker = None
        self._raw_pattern_on = False  # (with the connection)

    @property
    def _acks(self) -> str:
        return f"{self.prefix}:raw-stored"

    # incoming messages --------------------------------------------------------------

    def message(self, pattern: Any, channel: bytes, message: bytes) -> None:
        name = channel.decode("utf-8", "replace")
        topic = self.prefix + ":ev:"
        if name.startswith(topic):
            if pattern is not None and not pattern.startswith(topic.encode()):
                return  # our own announcement, also matched by a raw pattern
            self._announced(name[len(topic):], message)
        elif pattern is None and name == self._acks:
            self._acknowledged(message)
        elif not name.startswith(self.prefix + ":"):
            if not self._canonical(pattern, name):
                return  # a copy of a raw message also heard another way
            if (b":ev:" in channel and _ANNOUNCEMENT.match(message)) or (
                    channel.endswith(b":raw-stored") and _ACKNOWLEDGEMENT.match(message)) \
                    or channel.startswith(b"__"):
                # (another deployment's traffic, or Redis's own: Sentinel's
                # __sentinel__:hello, keyspace notifications: not raw events)
                self.foreign_skipped += 1
                return
            self._raw(channel, name, message)

    def _canonical(self, pattern: bytes | None, name: str) -> bool:
        """Redis sends a message once per matching subscription: the one copy of a raw
        message this daemon takes.  The leader takes what its raw pattern brings; a
        standby takes the exact subscription's copy, else the first matching local
        pattern's, else the raw pattern's (subscribed while it takes the lead)."""
        raw = self.raw_pattern.encode()
        if self.leader:
            return pattern is not None and pattern == raw
        if pattern is None:
            return name in self._raw_exact
        if name in self._raw_exact:
            return False
        local = sorted(p for p, matcher in self._raw_patterns.items() if matcher.match(name))
        if local:
            return pattern.decode("utf-8", "replace") == local[0]
        return self._raw_pattern_on and pattern == raw

    def _sharded_message(self, pattern: Any, channel: bytes, message: bytes) -> None:
        """An announcement on a Cluster shard: ``{P:k}:ev:<channel>``, or
        ``{P:k}:all`` with the channel first."""
        topic = channel.decode("utf-8", "replace")
        tag, _, rest = topic.partition("}:")
        shard = self.history.by_prefix.get(tag + "}")
        if shard is None:
            return
        if rest.startswith("ev:"):
            self._announced(rest[3:], message, shard.name)
        elif rest == "all":
            name, _, message = message.partition(b"\n")
            if self.registry.audience(name.decode("utf-8")):  # (else no pattern wants it)
                self._announced(name.decode("utf-8"), message, shard.name)

    def _announced(self, channel: str, message: bytes, shard: str = "") -> None:
        epoch, seq, name, data = message.decode("utf-8").split("\n", 3)
        event = Event(channel, data, EventId(epoch, int(seq), shard), name or None)
        if self._catching_up is not None:
            self._catching_up.append(event)
            return
        known = self.positions.get(shard)
        if known is not None and known.epoch != epoch:
            # Another timeline (a failover): this daemon may have missed the start of
            # it without a word (a demoted primary's subscription that went quiet),
            # so it catches up from where it was; the history says whether all is
            # there (else each stream resumes, with history-gap where due).
            self._moved_shards.add(shard)
            self._catch_up_moved([event])
            return
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        known = self.positions.get(event.shard)
        # (a new epoch: Redis lost its data, or the primary changed; its seq restarts)
        if known is None or event.seq > known.seq or event.epoch != known.epoch:
            self.positions[event.shard] = event
            self.registry.queue(event)  # nobody here needs the audience count

    def _raw(self, raw_channel: bytes, channel: str, message: bytes) -> None:
        """A plain ``PUBLISH channel message``: the leader stores it as if POSTed, the
        others hold it until the leader acknowledges it."""
        try:
            if len(message) > self.settings.max_body:
                raise ValueError(f"larger than --max-body ({self.settings.max_body} bytes)")
            data = message.decode("utf-8")
            check_message(channel, data)
        except Exception as exc:
            self.raw_warnings += 1
            if self.raw_warnings == 1 or self.raw_warnings % 1000 == 0:
                log.warn("ignored raw redis message on {channel!r} ({count} so far): {error}",
                         channel=channel[:200], count=self.raw_warnings, error=exc)
            return
        if self.leader:
            self._store_raw(channel, data)
        else:
            self.standby.heard(raw_key(raw_channel, message), channel, data)

    def _store_raw(self, channel: str, data: str) -> None:
        self.history.append(channel, data, raw=True).addErrback(
            lambda f: log.warn("raw message on {channel} not stored: {error}",
                               channel=channel, error=f.getErrorMessage()))

    def _acknowledged(self, message: bytes) -> None:
        text = message.decode("ascii", "replace")
        if text == self._marker:
            self._lead()
        elif not self.leader:
            self.standby.acknowledged(text)

    # raw-ingest leadership ----------------------------------------------------------

    @defer.inlineCallbacks
    def _campaign(self) -> Any:
        if not self.connected:
            return
        try:
            won = yield self.history.link.command(
                "EVAL", _LEADER, 1, self._lock, self.me, int(LEADER_LOCK_TTL * 1000))
        except Exception:
            return
        if int(won) and not self.leader and self._marker is None:
            # First hear every raw channel; then whatever the previous leader
            # acknowledged reaches us before this marker (one connection, in order):
            # once it is back, the rest was never stored.
            self._marker = f"sync:{secrets.token_hex(8)}"
            try:
                if not self._raw_pattern_on:
                    yield self.link.connection.psubscribe(self.raw_pattern)
                    self._raw_pattern_on = True
                yield self.history.link.command("PUBLISH", self._acks, self._marker)
            except Exception:
                self._marker = None
        elif not int(won) and (self.leader or self._raw_pattern_on):
            self.leader = False
            self._hear_only_local()
            log.info("another daemon now stores raw redis messages")

    def _hear_only_local(self) -> None:
        """Leading no more: the raw pattern goes, unless a client here uses it."""
        connection = self.link.connection
        if self._raw_pattern_on and connection is not None \
                and self.raw_pattern not in self._raw_patterns:
            connection.punsubscribe(self.raw_pattern).addErrback(lambda _: None)
        self._raw_pattern_on = False

    @property
    def _lock(self) -> str:
        return f"{self.prefix}:raw-leader"

    def _lead(self) -> None:
        self._marker = None
        self.leader = True
        missed = self.standby.take_unacknowledged()
        for channel, data in missed:
            self._store_raw(channel, data)
        self.raw_recovered += len(missed)
        log.info("this daemon now stores raw redis messages on {pattern!r} ({missed} heard "
                 "before that and never stored: stored now)", pattern=self.raw_pattern,
                 missed=len(missed))

    def stopService(self) -> defer.Deferred[None]:
        """Hand the raw-ingest lock over at once rather than when it expires (the command
        is on its way before the history link closes)."""
        if self.leader and self.history.link.ready:
            self.history.link.raw_command("EVAL", _RESIGN, 1, self._lock, self.me) \
                .addErrback(lambda _: None)
            self.leader = False
        return super().stopService()  # type: ignore[no-any-return]
