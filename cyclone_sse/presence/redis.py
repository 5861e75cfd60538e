"""Presence shared through Redis: every daemon of one Redis sees every member, and each
join or leave reaches the watchers on every daemon.

``P:presence:<channel>``  sorted set: member ``[client, user]`` (JSON) → when it expires
``P:presence``            pub/sub channel of joins and leaves: ``[kind, channel, client, user]``

A daemon renews its own members every ``REFRESH`` seconds; the members of a daemon that
died without saying leave drop out ``LIFETIME`` seconds later (no leave is sent for them).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse.links.redis import DEFAULT_TIMEOUT, RedisAddress, RedisLink
from cyclone_sse.links.redis_cluster import ClusterLinks
from cyclone_sse.presence.base import Member, Presence

log = Logger()

#: Seconds between renewals of this daemon's members.
REFRESH = 10.0
#: Seconds a member stays listed without a renewal.
LIFETIME = 3 * REFRESH


def _member(client: str, user: str | None) -> str:
    return json.dumps([client, user], separators=(",", ":"), ensure_ascii=False)


class RedisPresence(Presence):
    """Presence kept in Redis (``--history=redis``): one view for all daemons."""

    shared = True

    def __init__(self, clock: Any, address: RedisAddress, prefix: str,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.clock = clock
        self.prefix = prefix
        self.topic = f"{prefix}:presence"
        # (on a Cluster each member key goes to its slot's primary; PUBLISH reaches
        # every node, so the feed may listen on any)
        self.commands: Any = ClusterLinks(
            clock, address, "presence", on_node_up=lambda *_: self._renew_all(True),
            timeout=timeout) if address.cluster else \
            RedisLink(clock, address, "presence", on_up=lambda _: self._renew_all(True),
                      timeout=timeout)
        self.commands.setServiceParent(self)
        self.feed = RedisLink(clock, address, "presence pubsub", on_up=self._listen,
                              on_message=self._heard, timeout=timeout)
        self.feed.setServiceParent(self)
        renewal = TimerService(REFRESH, self._renew_all)
        renewal.clock = clock
        renewal.setServiceParent(self)

    def _key(self, channel: str) -> str:
        return f"{self.prefix}:presence:{channel}"

    def _listen(self, connection: Any) -> Any:
        return connection.subscribe(self.topic)

    def _heard(self, pattern: bytes | None, channel: bytes, message: bytes) -> None:
        try:
            kind, name, client, user = json.loads(message)
        except (ValueError, TypeError):
            return  # not ours: nothing to announce
        self.announce(kind, name, client, user)

    def changed(self, kind: str, channel: str, client: str, user: str | None) -> None:
        """Record the change in Redis and announce it there; every daemon (this one too)
        passes it to its watchers when Redis delivers it.  With Redis away, this
        daemon's own watchers still hear it."""
        key, member = self._key(channel), _member(client, user)
        if kind == "join":
            until = self.clock.seconds() + LIFETIME
            d = self.commands.command("ZADD", key, until, member)
            d.addCallback(lambda _: self.commands.command("EXPIRE", key, int(LIFETIME) + 1))
        else:
            d = self.commands.command("ZREM", key, member)
        d.addCallback(lambda _: self.commands.command(
            "PUBLISH", self.topic, json.dumps([kind, channel, client, user])))
        d.addErrback(lambda _: self.announce(kind, channel, client, user))

    def _renew_all(self, reconnected: bool = False) -> defer.Deferred[Any] | None:
        """Extend this daemon's members; on a (re)made connection, put them back in
        case Redis lost them meanwhile."""
        if not self.members or not (reconnected or self.commands.ready):
            return None
        commands = self.commands
        until = self.clock.seconds() + LIFETIME
        calls = []
        for channel, members in self.members.items():
            key = self._key(channel)
            pairs: list[Any] = []
            for client, user in members.items():
                pairs.extend((until, _member(client, user)))
            calls.append(commands.raw_command("ZADD", key, *pairs))
            calls.append(commands.raw_command("EXPIRE", key, int(LIFETIME) + 1))
        d = defer.gatherResults(calls, consumeErrors=True)
        d.addErrback(lambda _: None)  # the next round tries again
        return d

    def who(self, channel: str) -> defer.Deferred[list[Member]]:
        """Every daemon's members of ``channel`` (Redis unreachable: this daemon's own,
        which is what ``Presence`` knows)."""
        key, now = self._key(channel), self.clock.seconds()
        d = self.commands.command("ZREMRANGEBYSCORE", key, "-inf", now)
        d.addCallback(lambda _: self.commands.command("ZRANGE", key, 0, -1))
        d.addCallback(self._members)
        d.addErrback(lambda _: Presence.who(self, channel))
        return d

    @staticmethod
    def _members(reply: list[bytes]) -> list[Member]:
        found = {}
        for raw in reply:
            client, user = json.loads(raw)
            found[client] = user
        return [{"client": client, "user": found[client]} for client in sorted(found)]

    def stopService(self) -> defer.Deferred[None]:
        """Say leave for every member here while Redis is still connected (the
        WebSocket closes that would say it finish after the links are down)."""
        leaving = [(channel, client, user) for channel, members in self.members.items()
                   for client, user in members.items()]
        self.members.clear()
        commands = self.commands
        calls = []
        if commands.ready:
            for channel, client, user in leaving:
                calls.append(commands.raw_command("ZREM", self._key(channel),
                                                  _member(client, user)))
                calls.append(commands.raw_command(
                    "PUBLISH", self.topic, json.dumps(["leave", channel, client, user])))
        d: defer.Deferred[Any] = defer.gatherResults(calls, consumeErrors=True)
        d.addErrback(lambda _: None)  # they expire within LIFETIME anyway
        d.addCallback(lambda _: super(RedisPresence, self).stopService())
        return d

    def stats(self) -> dict[str, object]:
        stats = super().stats()
        stats["connected"] = self.commands.connected and self.feed.connected
        return stats
