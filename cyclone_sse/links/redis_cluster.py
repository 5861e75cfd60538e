"""Redis Cluster links: which primary holds which hash slot (``CLUSTER SLOTS``), one
command connection per primary with every command routed to the slot's owner
(``MOVED`` and ``ASK`` followed, the map re-read after a failover), and sharded pub/sub
(``SSUBSCRIBE``) kept on the node that owns each channel's slot.

Every connection is a ``RedisLink`` (one reconnect policy); this module only decides
where each command and subscription goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import txredisapi
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cyclone_sse.errors import BrokerUnavailable
from cyclone_sse.links.redis import DEFAULT_TIMEOUT, RedisAddress, RedisLink, encode_command

log = Logger()

SLOTS = 16384
#: Seconds between re-readings of the slot map while all is well (a failover or a
#: resharding is noticed sooner: by MOVED, or a primary's connection dropping).
MAP_REFRESH = 10.0
#: Seconds between re-readings while a slot's owner is unreachable (a failover).
MAP_REFRESH_DEGRADED = 0.5
#: Times one command follows MOVED, ASK or TRYAGAIN before it is refused.
MAX_REDIRECTS = 5

Node = tuple[str, int]


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key``: of its ``{tag}`` alone when it has a non-empty one."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return _crc16(raw) % SLOTS


def _error(failure: Any, *prefixes: str) -> str | None:
    """The text of a Redis error reply starting with one of ``prefixes``."""
    if failure.check(txredisapi.ResponseError):
        text = str(failure.value)
        if text.startswith(prefixes):
            return text
    return None


def _node_of(redirect: str) -> tuple[int, Node]:
    """``MOVED 3999 127.0.0.1:6381`` → (3999, ("127.0.0.1", 6381))."""
    _, slot, where = redirect.split()
    host, _, port = where.rpartition(":")
    return int(slot), (host.strip("[]"), int(port))


class ClusterLinks(MultiService):
    """Command connections to every primary of a Redis Cluster, by slot.

    ``on_node_up(connection, node)`` prepares each primary's connection (the history
    loads its scripts there); the map comes from a seed connection, which also runs the
    commands that have no key (``PUBLISH``)."""

    def __init__(self, clock: IReactorTime, address: RedisAddress, name: str,
                 on_node_up: Callable[[Any, Node], object] | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.clock = clock
        self.address = address
        self.name = name
        self.timeout = timeout
        self.on_node_up = on_node_up
        self.slots: list[Node | None] = [None] * SLOTS
        self.nodes: dict[Node, RedisLink] = {}
        self.map_changes: list[Callable[[], object]] = []  # told after each reading
        self.redirects = 0  # MOVED and ASK followed
        self.seed = RedisLink(clock, address, f"{name} (cluster map)",
                              on_up=self._read_map, timeout=timeout)
        self.seed.setServiceParent(self)
        refresh = TimerService(MAP_REFRESH_DEGRADED, self._refresh_if_due)
        refresh.clock = clock
        refresh.setServiceParent(self)
        self._last_read = 0.0
        self._reading: defer.Deferred[Any] | None = None

    # the map ------------------------------------------------------------------------

    def _read_map(self, connection: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = connection.execute_command("CLUSTER", "SLOTS")
        d.addCallback(self._new_map)
        return d

    def _new_map(self, reply: list[Any]) -> None:
        slots: list[Node | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            node = (primary[0].decode("ascii") or self.address.cluster[0][0], int(primary[1]))
            slots[start:end + 1] = [node] * (end - start + 1)
        self._last_read = self.clock.seconds()
        self.slots = slots
        owners = {node for node in slots if node is not None}
        for node in owners:
            self.link_for(node)
        for node in [n for n in self.nodes if n not in owners]:
            self.nodes.pop(node).disownServiceParent()  # (a demoted or removed node)
        # (every time: a MOVED may have patched the map before this reading)
        for listener in self.map_changes:
            listener()

    def refresh(self) -> defer.Deferred[Any]:
        """Read the slot map again (once, however many ask meanwhile)."""
        if self._reading is None:
            if not self.seed.ready:
                return defer.succeed(None)
            self._reading = self._read_map(self.seed.connection)

            def done(result: object) -> object:
                self._reading = None
                return result
            self._reading.addBoth(done)
            self._reading.addErrback(lambda _: None)
        return once_done(self._reading)

    def _refresh_if_due(self) -> None:
        degraded = any(node is None or not self.link_for(node).ready for node in
                       {*self.slots})
        if degraded or self.clock.seconds() - self._last_read >= MAP_REFRESH:
            self.refresh()

    def link_for(self, node: Node) -> RedisLink:
        link = self.nodes.get(node)
        if link is None:
            link = self.nodes[node] = RedisLink(
                self.clock, self.address.node(*node), f"{self.name} ({node[0]}:{node[1]})",
                on_up=self._node_up(node), on_down=self.refresh, timeout=self.timeout)
            link.setServiceParent(self)
        return link

    def _node_up(self, node: Node) -> Callable[[Any], object]:
        def up(connection: Any) -> object:
            return self.on_node_up(connection, node) if self.on_node_up else None
        return up

    def owner(self, key: str | bytes) -> Node | None:
        return self.slots[key_slot(key)]

    def nodes_of(self, keys: Iterable[str]) -> dict[Node | None, list[str]]:
        by_node: dict[Node | None, list[str]] = {}
        for key in keys:
            by_node.setdefault(self.owner(key), []).append(key)
        return by_node

    # commands -----------------------------------------------------------------------

    def send(self, key: str, command: bytes) -> defer.Deferred[Any]:
        """Run ``command`` (encoded) on the owner of ``key``'s slot, following MOVED
        (the slot has a new owner: the map is re-read), ASK (a slot being migrated:
        this command goes to the target, after ``ASKING``) and TRYAGAIN."""
        return self._send(key, command, self.owner(key), 0, False)

    def _send(self, key: str, command: bytes, node: Node | None, tries: int,
              asking: bool) -> defer.Deferred[Any]:
        if node is None:  # (no map yet, or the slot has no owner now)
            if tries >= MAX_REDIRECTS:
                return defer.fail(BrokerUnavailable(
                    f"{self.name}: no Redis Cluster node serves slot {key_slot(key)}"))
            d = self.when_ready()
            d.addCallback(lambda _: self._send(key, command, self.owner(key), tries + 1,
                                               False))
            return d
        link = self.link_for(node)
        if asking:
            link.send(encode_command("ASKING")).addErrback(lambda _: None)
        d = link.send(command)
        d.addErrback(self._redirected, key, command, tries)
        return d

    def _redirected(self, failure: Any, key: str, command: bytes, tries: int) -> Any:
        redirect = _error(failure, "MOVED ", "ASK ", "TRYAGAIN")
        if redirect is None or tries >= MAX_REDIRECTS:
            return failure
        self.redirects += 1
        if redirect.startswith("TRYAGAIN"):  # (a multi-key command during a migration)
            d: defer.Deferred[Any] = defer.Deferred()
            self.clock.callLater(0.05, d.callback, None)
            d.addCallback(lambda _: self._send(key, command, self.owner(key), tries + 1,
                                               False))
            return d
        slot, node = _node_of(redirect)
        if redirect.startswith("MOVED"):
            self.slots[slot] = node
            self.refresh()
            return self._send(key, command, node, tries + 1, False)
        return self._send(key, command, node, tries + 1, True)

    def command(self, *args: Any) -> defer.Deferred[Any]:
        """One command, routed by its key: the first key of ``EVAL``/``EVALSHA``, the
        first argument of others; keyless ones (``PUBLISH``) go to the seed."""
        name = str(args[0]).upper()
        if name in ("EVAL", "EVALSHA"):
            key = str(args[3]) if int(args[2]) > 0 else None
        elif name in ("PUBLISH", "PING", "INFO"):
            key = None
        else:
            key = str(args[1]) if len(args) > 1 else None
        if key is None:
            return self.seed.command(*args)
        return self.send(key, encode_command(*args))

    raw_command = command

    # state --------------------------------------------------------------------------

    def _primaries(self) -> list[RedisLink]:
        return [self.nodes[n] for n in {*self.slots} if n is not None and n in self.nodes]

    @property
    def ready(self) -> bool:
        primaries = self._primaries()
        return self.seed.ready and bool(primaries) and all(link.ready for link in primaries)

    connected = ready

    @property
    def outages(self) -> int:
        return self.seed.outages + sum(link.outages for link in self.nodes.values())

    @property
    def connection(self) -> Any:
        return self.seed.connection

    def unavailable(self) -> BrokerUnavailable:
        down = [link for link in [self.seed, *self._primaries()] if not link.ready]
        return down[0].unavailable() if down else BrokerUnavailable(f"{self.name} is not ready")

    @defer.inlineCallbacks
    def when_ready(self, timeout: float = 3.0) -> Any:
        """Fires once the map is read and every primary's connection is ready; fails
        with ``BrokerUnavailable`` after ``timeout`` seconds."""
        deadline = self.clock.seconds() + timeout
        yield self.seed.when_ready(timeout)
        for link in self._primaries():
            yield link.when_ready(max(0.01, deadline - self.clock.seconds()))


class ShardedPubSub(MultiService):
    """Sharded subscriptions (``SSUBSCRIBE``), each on the primary that owns its slot
    now.  When a primary goes away, or its slot moves, the channel is subscribed again
    where it lives now and ``on_moved(channels)`` lets the owner fetch what it may
    have missed meanwhile."""

    def __init__(self, clock: IReactorTime, links: ClusterLinks,
                 on_message: Callable[[bytes | None, bytes, bytes], None],
                 on_moved: Callable[[list[str]], object], timeout: float) -> None:
        super().__init__()
        self.clock = clock
        self.links = links
        self.on_message = on_message
        self.on_moved = on_moved
        self.timeout = timeout
        self.wanted: set[str] = set()
        self.where: dict[str, Node] = {}  # channel -> node it is subscribed on
        self.lost: set[str] = set()  # subscribed once, dropped since: to catch up
        self.nodes: dict[Node, RedisLink] = {}
        links.map_changes.append(self.reconcile)
        # while a wanted channel is subscribed nowhere (its node said MOVED: the map
        # was not up to date yet), the map is read again, and reconcile tries again
        retry = TimerService(MAP_REFRESH_DEGRADED, self._retry)
        retry.clock = clock
        retry.setServiceParent(self)

    def _retry(self) -> None:
        if len(self.where) < len(self.wanted):
            self.links.refresh()

    def _link(self, node: Node) -> RedisLink:
        link = self.nodes.get(node)
        if link is None:
            link = self.nodes[node] = RedisLink(
                self.clock, self.links.address.node(*node),
                f"{self.links.name} pubsub ({node[0]}:{node[1]})",
                on_up=lambda connection: self._resubscribe(node, connection),
                on_down=lambda: self._lost(node), on_message=self.on_message,
                timeout=self.timeout)
            link.factory.on_unsubscribed = self._unsubscribed
            link.setServiceParent(self)
        return link

    def subscribe(self, channels: list[str]) -> defer.Deferred[Any]:
        """Subscribe where each channel lives; fires once all are (or fails)."""
        self.wanted.update(channels)
        waits = []
        for node, names in self.links.nodes_of(channels).items():
            if node is None:
                continue  # (subscribed by reconcile once the map is known)
            link = self._link(node)
            if link.ready:
                waits.append(self._ssubscribe(node, link.connection, names))
            else:
                waits.append(link.when_ready())
        return defer.gatherResults(waits, consumeErrors=True)

    def unsubscribe(self, channels: list[str]) -> None:
        self.wanted.difference_update(channels)
        self.lost.difference_update(channels)
        by_node: dict[Node, list[str]] = {}
        for channel in channels:
            node = self.where.pop(channel, None)
            if node is not None:
                by_node.setdefault(node, []).append(channel)
        for node, names in by_node.items():
            link = self.nodes.get(node)
            if link is not None and link.ready:
                for group in _by_slot(names):
                    link.connection.execute_command("SUNSUBSCRIBE", *group) \
                        .addErrback(lambda _: None)

    def _ssubscribe(self, node: Node, connection: Any, names: list[str]) -> Any:
        waits = []
        for group in _by_slot(names):  # (one SSUBSCRIBE may name one slot only)
            d = connection.execute_command("SSUBSCRIBE", *group, apply_timeout=False)
            d.addCallbacks(self._subscribed, self._refused, callbackArgs=(node, group))
            waits.append(d)
        return defer.gatherResults(waits, consumeErrors=True).addErrback(first_error)

    def _refused(self, failure: Any) -> None:
        """``MOVED``: this node does not own the slot (yet, or any more); the map is
        read again and the channels stay unsubscribed until ``reconcile`` places them
        (``_retry``).  Anything else is the connection's trouble: it is re-made."""
        if _error(failure, "MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN") is None:
            failure.raiseException()
        self.links.refresh()

    def _subscribed(self, _: object, node: Node, names: list[str]) -> None:
        for name in names:
            if name in self.wanted:
                self.where[name] = node

    def _resubscribe(self, node: Node, connection: Any) -> Any:
        mine = [c for c in self.wanted if self.links.owner(c) == node]
        d = self._ssubscribe(node, connection, mine) if mine else defer.succeed(None)
        d.addCallback(lambda _: self._report(mine))
        return d

    def _report(self, subscribed: list[str]) -> None:
        """Tell the owner which of ``subscribed`` (those that are, now) had been
        dropped before."""
        moved = [c for c in subscribed if c in self.lost and c in self.where]
        self.lost.difference_update(moved)
        if moved:
            self.on_moved(moved)

    def _lost(self, node: Node) -> None:
        for channel in [c for c, n in self.where.items() if n == node]:
            del self.where[channel]
            self.lost.add(channel)
        self.links.refresh()

    def _unsubscribed(self, channel: bytes) -> None:
        """Redis dropped a subscription on its own: its slot moved (resharding)."""
        name = channel.decode("utf-8", "replace")
        if self.where.pop(name, None) is not None and name in self.wanted:
            self.lost.add(name)
        self.links.refresh()

    def reconcile(self) -> None:
        """After a new map: each wanted channel not subscribed where it lives now is
        subscribed there (and its owner told, to catch up); nodes that own nothing any
        more are let go."""
        for node, names in self.links.nodes_of(self.wanted).items():
            if node is None:
                continue
            link = self._link(node)
            stray = [c for c in names if self.where.get(c) != node]
            if stray and link.ready:
                for channel in stray:  # (moved without a word: a failover's new map)
                    if self.where.pop(channel, None) is not None:
                        self.lost.add(channel)
                d = self._ssubscribe(node, link.connection, stray)
                d.addCallback(lambda _, s=stray: self._report(s))
                d.addErrback(lambda _: self.links.refresh())
        owners = {n for n in self.links.slots if n is not None}
        for node in [n for n in self.nodes if n not in owners]:
            self.nodes.pop(node).disownServiceParent()

    @property
    def ready(self) -> bool:
        return all(c in self.where for c in self.wanted) and all(
            link.ready for link in self.nodes.values())

    @property
    def outages(self) -> int:
        return sum(link.outages for link in self.nodes.values())


def once_done(shared: defer.Deferred[Any]) -> defer.Deferred[None]:
    """A Deferred of one's own that fires (with None) once ``shared`` has, leaving
    ``shared``'s result to its other waiters."""
    d: defer.Deferred[None] = defer.Deferred()

    def tell(result: object) -> object:
        d.callback(None)
        return result
    shared.addBoth(tell)
    return d


def first_error(failure: Any) -> Any:
    """The failure itself rather than ``gatherResults``' wrapper (its text is what a
    log line or a 503 says)."""
    if failure.check(defer.FirstError):
        return failure.value.subFailure
    return failure


def _by_slot(names: list[str]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(key_slot(name), []).append(name)
    return list(groups.values())
