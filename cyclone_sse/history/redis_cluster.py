"""The Redis Cluster history (``--redis-url=redis+cluster://...``): the Redis history's
layout and scripts, on 16 shards instead of one order.

A channel belongs to one of 16 shards, named ``0``..``f``, by a hash of its name; each
shard is a Redis history of its own under the hash-tagged prefix ``{P:<shard>}`` (its
keys share one slot, so every script touches one slot of one node and declares its
key), with its own epoch and sequence: no key is written by every publish of the
deployment.  The tags are chosen so that shard ``k`` lies in slots ``k*1024`` to
``k*1024+1023``: a Cluster whose primaries own even ranges of slots gets even shares.

Events are announced with sharded pub/sub (``SPUBLISH {P:k}:ev:<channel>``, and on
``{P:k}:all`` for pattern subscribers).  An id names its shard (``<shard>.<epoch>-<seq>``);
a stream over channels of several shards resumes from a ``Position``, one id per shard
(``event.Position``).
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from cyclone_sse.channels import is_pattern
from cyclone_sse.event import SHARD_NAMES, Event, EventId, Position
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
from cyclone_sse.history.redis import (
    DEFAULT_PREFIX,
    DurableWrites,
    _replication_id,
    _text,
    info_field,
    replayed,
)
from cyclone_sse.history.redis_scripts import APPEND, FOLLOW, MIGRATE, SINCE, SWEEP
from cyclone_sse.interfaces import IRedisHistory, IStats
from cyclone_sse.links.redis import DEFAULT_TIMEOUT, RedisAddress, encode_command
from cyclone_sse.links.redis_cluster import SLOTS, ClusterLinks, Node, first_error, key_slot

log = Logger()

_SCRIPTS = {"append": APPEND, "since": SINCE, "sweep": SWEEP}
_SHAS = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in _SCRIPTS.items()}


class ClusterTooOld(Exception):
    """A Cluster node without sharded pub/sub (Redis before 7)."""


def shard_of(channel: str) -> str:
    """The shard a channel's events live on."""
    return SHARD_NAMES[key_slot(channel) % len(SHARD_NAMES)]


def shard_tag(prefix: str, shard: str) -> str:
    """The hash tag of a shard's keys: ``prefix:shard``, with ``~n`` appended for the
    first ``n`` that puts it in the shard's own sixteenth of the slots."""
    width = SLOTS // len(SHARD_NAMES)
    wanted = SHARD_NAMES.index(shard)
    tag, n = f"{prefix}:{shard}", 0
    while key_slot(tag) // width != wanted:
        n += 1
        tag = f"{prefix}:{shard}~{n}"
    return tag


class Shard:
    """One shard's keys, and what its last append said."""

    def __init__(self, prefix: str, name: str) -> None:
        self.name = name
        self.prefix = "{" + shard_tag(prefix, name) + "}"
        self.key = f"{self.prefix}:epoch"  # (the key its scripts declare)
        self.bytes = 0


@implementer(IRedisHistory, IStats)
class ClusterHistory(DurableWrites, SweptStore):
    """Events and ids on a Redis Cluster, in 16 shards (see the module's docstring).
    The count and byte limits apply per shard, a sixteenth each (at least 1)."""

    def __init__(self, clock: IReactorTime, address: RedisAddress,
                 prefix: str = DEFAULT_PREFIX, size: int = DEFAULT_SIZE,
                 ttl: float = DEFAULT_TTL, channels: int = DEFAULT_CHANNELS,
                 timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_BYTES,
                 channel_bytes: int = DEFAULT_CHANNEL_BYTES, min_replicas: int = 0) -> None:
        super().__init__(clock)
        self.link = ClusterLinks(clock, address, "history", on_node_up=self._node_up,
                                 timeout=timeout)
        self.link.setServiceParent(self)
        self.prefix = prefix
        self.shards = {name: Shard(prefix, name) for name in SHARD_NAMES}
        self.by_prefix = {shard.prefix: shard for shard in self.shards.values()}
        self.size = size
        self.ttl_ms = int(ttl * 1000)
        share = len(SHARD_NAMES)
        self.max_channels = -(-channels // share) if channels else 0
        self.max_bytes = -(-max_bytes // share) if max_bytes else 0
        self.channel_bytes = channel_bytes
        self.acks = f"{prefix}:raw-stored"
        self.new_epochs = 0
        self.durable_writes(min_replicas, timeout)

    @property
    def bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards.values())

    def shard_of(self, channel: str) -> Shard:
        return self.shards[shard_of(channel)]

    @defer.inlineCallbacks
    def _node_up(self, connection: Any, node: Node) -> Any:
        """A primary's connection: its scripts loaded, and each shard it owns brought
        to the current layout and told which primary writes it (``FOLLOW``)."""
        server = yield connection.execute_command("INFO", "server")
        version = info_field(server, "redis_version")
        if version and int(version.split(".")[0]) < 7:
            # (SPUBLISH and SSUBSCRIBE came with Redis 7: every append would fail)
            raise ClusterTooOld(f"Redis {version} at {node[0]}:{node[1]}: a Cluster needs "
                                "Redis 7 or later (sharded pub/sub)")
        for body in _SCRIPTS.values():
            yield connection.execute_command("SCRIPT", "LOAD", body)
        info = yield connection.execute_command("INFO", "replication")
        replid = _replication_id(info)
        for shard in self.shards.values():
            if self.link.owner(shard.key) != node:
                continue
            yield connection.execute_command("EVAL", MIGRATE, 1, shard.key, shard.prefix)
            if replid:
                began = yield connection.execute_command("EVAL", FOLLOW, 1, shard.key,
                                                         shard.prefix, replid)
                if int(began):
                    self.new_epochs += 1
                    log.warn("redis cluster shard {shard} is written by another primary "
                             "({host}:{port}) than before (a failover?): a new epoch "
                             "begins for it", shard=shard.name, host=node[0], port=node[1])

    def _run(self, name: str, shard: Shard, *args: Any) -> defer.Deferred[Any]:
        command = encode_command("EVALSHA", _SHAS[name], 1, shard.key, shard.prefix, *args)
        d = self.link.send(shard.key, command)
        d.addErrback(self._unknown_script, name, shard, args)
        return d

    def _unknown_script(self, failure: Any, name: str, shard: Shard,
                        args: tuple[Any, ...]) -> Any:
        if "NOSCRIPT" not in failure.getErrorMessage():
            return failure
        # a primary that has not got it (a promoted replica before its set-up ran)
        return self.link.send(shard.key, encode_command(
            "EVAL", _SCRIPTS[name], 1, shard.key, shard.prefix, *args))

    def append(self, channel: str, data: str, name: str | None = None,
               publisher_id: str | None = None,
               raw: bool = False) -> defer.Deferred[tuple[Event, bool]]:
        shard = self.shard_of(channel)
        d = self._run("append", shard, channel, data, name or "", publisher_id or "",
                      self.size, self.ttl_ms, self.max_channels, self.max_bytes,
                      self.channel_bytes, int(raw), "SPUBLISH", self.acks)
        d.addCallback(self._appended, shard, channel, data, name)
        if self.min_replicas:
            waited = self.link.send(shard.key, self._wait)
            d.addCallback(lambda appended: waited.addCallback(self._confirmed, appended))
        return d

    def _appended(self, reply: list[Any], shard: Shard, channel: str, data: str,
                  name: str | None) -> tuple[Event, bool]:
        epoch, seq, duplicate = _text(reply[0]), int(reply[1]), int(reply[2])
        shard.bytes = int(reply[4])
        return Event(channel, data, EventId(epoch, seq, shard.name), name), not duplicate

    def since(self, channels: list[str], last_id: str | None,
              limit: int = DEFAULT_REPLAY_LIMIT) -> defer.Deferred[Replay]:
        """Each shard the channels live on (all of them for a pattern) is asked from
        the client's id for it; the answers are merged in publish time order."""
        wanted: dict[str, list[str]] = {}
        for channel in channels:
            for name in SHARD_NAMES if is_pattern(channel) else shard_of(channel):
                wanted.setdefault(name, []).append(channel)
        position = Position.parse(last_id)
        asks = []
        for name, names in sorted(wanted.items()):
            mine = position.get(name) if position is not None else None
            if mine is not None:
                epoch, after, shard_limit = mine.epoch, mine.seq, limit
            elif last_id and position is None:
                epoch, after, shard_limit = "?", 0, limit  # (no id of ours at all)
            else:
                # a shard the client has no id for: where it stands is its head
                epoch, after, shard_limit = "", 0, 1
            d = self._run("since", self.shards[name], epoch, after, shard_limit,
                          self.ttl_ms, *names)
            d.addCallback(self._shard_replay, name, mine is not None or epoch == "?")
            asks.append(d)
        gathered: defer.Deferred[Any] = defer.gatherResults(asks, consumeErrors=True)
        gathered.addErrback(first_error)
        gathered.addCallback(self._replay, bool(last_id), limit)
        return gathered

    def _shard_replay(self, reply: list[Any], shard: str, asked: bool) -> dict[str, Any]:
        epoch = _text(reply[0])
        answer: dict[str, Any] = {
            "head": EventId(epoch, int(reply[1]), shard), "unknown": int(reply[2]),
            "lost": int(reply[3]), "truncated": int(reply[6]), "events": []}
        if asked:
            answer["events"], expired = replayed(
                reply, int(reply[4]) - self.ttl_ms if self.ttl_ms else None, shard)
            answer["lost"] |= expired
        return answer

    def _replay(self, answers: list[dict[str, Any]], asked: bool, limit: int) -> Replay:
        head = Position.of(a["head"] for a in answers)
        if not asked:
            return Replay(head=head)
        # each shard in its own order; between shards, by the time they were stored
        merged = [e for _, e in heapq.merge(*(a["events"] for a in answers),
                                            key=lambda pair: pair[0])]
        return assemble(head, [merged], limit,
                        unknown=any(a["unknown"] for a in answers),
                        expired=any(a["lost"] for a in answers),
                        truncated=any(a["truncated"] for a in answers))

    def sweep(self) -> defer.Deferred[Any] | None:
        if not self.ttl_ms or not self.link.ready:
            return None
        d = defer.gatherResults([self._run("sweep", shard, self.ttl_ms)
                                 for shard in self.shards.values()], consumeErrors=True)
        d.addErrback(lambda _: None)  # the next sweep will try again
        return d

    def stats(self) -> dict[str, object]:
        return {"store": "redis-cluster", "connected": self.link.ready, "bytes": self.bytes,
                "new_epochs": self.new_epochs, "not_durable": self.not_durable,
                "redirects": self.link.redirects,
                "primaries": len({n for n in self.link.slots if n is not None})}
