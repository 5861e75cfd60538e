"""The Redis history store: durable, shared by every daemon of a deployment.

Layout under a key prefix ``P`` (``--redis-prefix``):

``P:epoch``            this history's epoch (changes if Redis loses its data, or the primary
                       changes: ``FOLLOW``)
``P:replid``           replication id of the primary that wrote here last
``P:prev-epoch``       the epoch before the last change of primary, and ``P:fork``, the seq
                       up to which its ids name the same events as the current epoch's
``P:seq``              the global sequence: one order for all channels
``P:ch:<channel>``     a Stream per channel, entry id ``<seq>-0``, fields d(ata) e(vent) t(ime ms)
``P:evicted``          hash channel → highest seq trimmed from its stream
``P:channels``         sorted set channel → its newest seq (patterns, the cap, the sweep)
``P:sizes``            sorted set channel → bytes held (the largest gives first)
``P:bytes``            bytes held by all channels (``--history-bytes`` bounds it)
``P:dropped``          highest seq of any whole stream dropped by the channel cap or age
``P:layout``           2: the layout above (``MIGRATE`` brings older ones to it)
``P:pid:<ch>:<id>``    a publisher's own id, for de-duplication
``P:ev:<channel>``     pub/sub channel on which each stored event is announced
``P:raw-stored``       pub/sub channel acknowledging each stored raw message (its SHA-1)

Appending and reading are Lua scripts (``redis_scripts``), so a replay is one
consistent snapshot and the announcement order on ``P:ev:*`` is the sequence order.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from cyclone_sse.errors import BrokerUnavailable
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
)
from cyclone_sse.history.redis_scripts import APPEND, FOLLOW, MIGRATE, SINCE, SWEEP
from cyclone_sse.interfaces import IRedisHistory, IStats
from cyclone_sse.links.redis import (
    DEFAULT_TIMEOUT,
    RedisAddress,
    RedisLink,
    encode_arguments,
    encode_command,
)

log = Logger()

DEFAULT_PREFIX = "cyclone-sse"


class ClusterUnsupported(Exception):
    """The history was pointed at a Redis Cluster node as at a single server."""


class NotDurable(BrokerUnavailable):
    """Stored on the primary, but fewer replicas than ``--redis-min-replicas`` have it."""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class DurableWrites:
    """``--redis-min-replicas``: a ``WAIT`` sent right behind each append counts the
    replicas that have it; too few is a refusal (``NotDurable``)."""

    def durable_writes(self, min_replicas: int, timeout: float) -> None:
        # replicas that must confirm, within half the reply timeout (so a slow
        # confirmation is a refusal, not a lost connection)
        self.min_replicas = min_replicas
        self._wait = encode_command("WAIT", min_replicas, max(1, int(timeout * 500)))
        self.not_durable = 0  # publishes refused: too few replicas confirmed them

    def _confirmed(self, replicas: Any, appended: tuple[Event, bool]) -> tuple[Event, bool]:
        if int(replicas) < self.min_replicas:
            self.not_durable += 1
            raise NotDurable(f"stored on the primary (and delivered) but confirmed by "
                             f"{int(replicas)} of {self.min_replicas} replicas "
                             "(--redis-min-replicas): a failover could lose it; retry with "
                             "the same 'id' to publish it exactly once")
        return appended


@implementer(IRedisHistory, IStats)
class RedisHistory(DurableWrites, SweptStore):
    """Events and ids in Redis: valid across daemons and daemon restarts.

    Its command connection (``link``) is a child service; the Redis broker sends its
    leader election through it too."""

    def __init__(self, clock: IReactorTime, address: RedisAddress,
                 prefix: str = DEFAULT_PREFIX, size: int = DEFAULT_SIZE,
                 ttl: float = DEFAULT_TTL, channels: int = DEFAULT_CHANNELS,
                 timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_BYTES,
                 channel_bytes: int = DEFAULT_CHANNEL_BYTES, min_replicas: int = 0) -> None:
        super().__init__(clock)
        self.link = RedisLink(clock, address, "history", on_up=self.load_scripts,
                              timeout=timeout)
        self.link.setServiceParent(self)
        self.prefix = prefix
        self.size = size
        self.ttl_ms = int(ttl * 1000)
        self.max_channels = channels
        self.max_bytes = max_bytes
        self.channel_bytes = channel_bytes
        self.bytes = 0  # held in all, as of the last append from here
        self._scripts: dict[str, bytes] = {}  # name -> "EVALSHA <sha> 0 <prefix>", encoded
        self.new_epochs = 0  # begun by this daemon on meeting another primary (FOLLOW)
        self.durable_writes(min_replicas, timeout)

    @defer.inlineCallbacks
    def load_scripts(self, connection: Any) -> Any:
        """SCRIPT LOAD once per connection (EVALSHA afterwards), after bringing a
        history an older version wrote to the current layout."""
        cluster = yield connection.execute_command("INFO", "cluster")
        if b"cluster_enabled:1" in cluster:
            # (these scripts would touch keys of many slots: refused, and every
            # publish would be a 503 that named nothing)
            raise ClusterUnsupported("this Redis is a Cluster node: name the Cluster "
                                     "with --redis-url=redis+cluster://host:port[,...]")
        yield connection.execute_command("EVAL", MIGRATE, 0, self.prefix)
        info = yield connection.execute_command("INFO", "replication")
        replid = _replication_id(info)
        if replid:
            began = yield connection.execute_command("EVAL", FOLLOW, 0, self.prefix, replid)
            if int(began):
                self.new_epochs += 1
                log.warn("redis at {address} has another replication id than the server "
                         "that wrote this history last (a failover?): a new epoch begins, "
                         "ids of the old one resume exactly up to where both agree",
                         address=self.link.address)
        for name, body in (("append", APPEND), ("since", SINCE), ("sweep", SWEEP)):
            sha = yield connection.execute_command("SCRIPT", "LOAD", body)
            self._scripts[name] = encode_arguments(("EVALSHA", _text(sha), 0, self.prefix))

    def _run(self, name: str, *args: Any) -> defer.Deferred[Any]:
        """Run script ``name`` with ``args`` (after the prefix), encoded here in one go."""
        head = self._scripts.get(name)
        if head is None:  # (not loaded yet: it is once the link is ready)
            d = self.link.when_ready()
            d.addCallback(lambda _: self._run(name, *args))
            return d
        return self.link.send(b"*%d\r\n%s%s" % (4 + len(args), head, encode_arguments(args)))

    def append(self, channel: str, data: str, name: str | None = None,
               publisher_id: str | None = None,
               raw: bool = False) -> defer.Deferred[tuple[Event, bool]]:
        """Store and announce one event; ``raw`` also acknowledges it on
        ``P:raw-stored`` (see the Redis broker's raw ingestion)."""
        d = self._run("append", channel, data, name or "", publisher_id or "", self.size,
                      self.ttl_ms, self.max_channels, self.max_bytes, self.channel_bytes,
                      int(raw))
        d.addCallback(self._appended, channel, data, name)
        if self.min_replicas:
            # sent right behind the append, on the same connection: it counts the
            # replicas that have everything up to it
            waited = self._sent_after_scripts(self._wait)
            d.addCallback(lambda appended: waited.addCallback(self._confirmed, appended))
        return d

    def _sent_after_scripts(self, command: bytes) -> defer.Deferred[Any]:
        if "append" in self._scripts:
            return self.link.send(command)
        d = self.link.when_ready()  # (fires after the append queued before it)
        d.addCallback(lambda _: self.link.send(command))
        return d

    def _appended(self, reply: list[Any], channel: str, data: str,
                  name: str | None) -> tuple[Event, bool]:
        epoch, seq, duplicate = _text(reply[0]), int(reply[1]), int(reply[2])
        self.bytes = int(reply[4])
        return Event(channel, data, EventId(epoch, seq), name), not duplicate

    def since(self, channels: list[str], last_id: str | None,
              limit: int = DEFAULT_REPLAY_LIMIT) -> defer.Deferred[Replay]:
        # The script places the id itself, against a consistent snapshot: it only needs
        # the id's parts ("?" for text that is no id at all: unknown to any epoch).
        asked = EventId.parse(last_id)
        epoch, after = (asked.epoch, asked.seq) if asked else ("?" if last_id else "", 0)
        d = self._run("since", epoch, after, limit, self.ttl_ms, *channels)
        d.addCallback(self._replay, bool(last_id), limit)
        return d

    def _replay(self, reply: list[Any], asked: bool, limit: int) -> Replay:
        epoch, head_seq = _text(reply[0]), int(reply[1])
        unknown, lost, now, truncated = int(reply[2]), int(reply[3]), int(reply[4]), \
            int(reply[6])
        head = EventId(epoch, head_seq)
        if not asked:
            return Replay(head=Position((head,)))
        timed, expired = replayed(reply, now - self.ttl_ms if self.ttl_ms else None)
        return assemble(head, [[e for _, e in timed]], limit, unknown=bool(unknown),
                        expired=expired or bool(lost), truncated=bool(truncated))

    def sweep(self) -> defer.Deferred[Any] | None:
        """Drop whole channels idle for longer than the age limit."""
        if not self.ttl_ms or not self.link.connected or "sweep" not in self._scripts:
            return None
        d = self._run("sweep", self.ttl_ms)
        d.addErrback(lambda _: None)  # the next sweep will try again
        return d

    def stats(self) -> dict[str, object]:
        return {"store": "redis", "connected": self.link.connected, "bytes": self.bytes,
                "new_epochs": self.new_epochs, "not_durable": self.not_durable}


def replayed(reply: list[Any], oldest_kept: int | None,
             shard: str = "") -> tuple[list[tuple[int, Event]], bool]:
    """The events of a ``SINCE`` reply, oldest first, each with the time (ms) it was
    stored; and whether some were past their age (the next append trims them)."""
    epoch, rest, expired = _text(reply[0]), reply[7:], False
    events = []
    for i in range(len(rest) - 2, -1, -2):  # the script sends them newest first
        channel, (entry_id, fields) = _text(rest[i]), rest[i + 1]
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        at = int(values[b"t"])
        if oldest_kept is not None and at < oldest_kept:
            expired = True
            continue
        seq = int(_text(entry_id).partition("-")[0])  # a Stream entry id: <seq>-0
        events.append((at, Event(channel, _text(values[b"d"]), EventId(epoch, seq, shard),
                                 _text(values[b"e"]) or None)))
    return events, expired


def info_field(info: bytes | str, name: str) -> str:
    """One field of an ``INFO`` reply ("" when the server does not give it)."""
    for line in _text(info).splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def _replication_id(info: bytes | str) -> str:
    """``master_replid`` from ``INFO replication`` ("" when the server hides it)."""
    return info_field(info, "master_replid")
