"""One daemon's presence: members per channel, and join/leave sent to the watchers."""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.application.service import MultiService
from twisted.internet import defer
from zope.interface import implementer

from cyclone_sse.interfaces import IStats

JOIN = "join"
LEAVE = "leave"

#: ``{"client": <connection id>, "user": <token sub or None>}``
Member = dict[str, Any]


class Watcher(Protocol):
    """A subscription that receives a presence channel's join and leave messages."""

    def push(self, message: bytes) -> None:
        """Send one server message (JSON text), unchanged."""


def presence_message(kind: str, channel: str, client: str, user: str | None) -> bytes:
    """A join or leave, encoded once for every watcher of the channel."""
    return json.dumps({"type": kind, "channel": channel, "client": client, "user": user},
                      ensure_ascii=False).encode("utf-8")


@implementer(IStats)
class Presence(MultiService):
    """Members of presence channels held by this daemon, and their watchers.

    ``join`` and ``leave`` are called by the WebSocket transport when a subscription to a
    presence channel goes live and when it ends; ``who`` answers who is there."""

    shared = False  # whether other daemons' members are included (RedisPresence)

    def __init__(self) -> None:
        super().__init__()
        self.members: dict[str, dict[str, str | None]] = {}  # channel → client → user
        self.watchers: dict[str, set[Watcher]] = {}
        self.joins = 0

    def join(self, channel: str, client: str, user: str | None, watcher: Watcher) -> None:
        self.watchers.setdefault(channel, set()).add(watcher)
        self.members.setdefault(channel, {})[client] = user
        self.joins += 1
        self.changed(JOIN, channel, client, user)

    def leave(self, channel: str, client: str, watcher: Watcher) -> None:
        watchers = self.watchers.get(channel)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self.watchers[channel]
        members = self.members.get(channel)
        if members is None or client not in members:
            return
        user = members.pop(client)
        if not members:
            del self.members[channel]
        self.changed(LEAVE, channel, client, user)

    def changed(self, kind: str, channel: str, client: str, user: str | None) -> None:
        """Tell whoever watches the channel (here: this daemon's watchers)."""
        self.announce(kind, channel, client, user)

    def announce(self, kind: str, channel: str, client: str, user: str | None) -> None:
        watchers = self.watchers.get(channel)
        if watchers:
            message = presence_message(kind, channel, client, user)
            for watcher in list(watchers):
                watcher.push(message)

    def who(self, channel: str) -> defer.Deferred[list[Member]]:
        """The members of ``channel``, ordered by client id."""
        members = self.members.get(channel, {})
        return defer.succeed([{"client": client, "user": members[client]}
                              for client in sorted(members)])

    def stats(self) -> dict[str, object]:
        return {"shared": self.shared, "channels": len(self.members),
                "members": sum(len(m) for m in self.members.values()), "joins": self.joins}
