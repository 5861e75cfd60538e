"""Presence: which WebSocket clients are subscribed to a channel whose policy keeps it
(``+presence``), and the join/leave messages their subscriptions receive.

``Presence`` keeps one daemon's; ``RedisPresence`` (imported only when asked for)
shares it between the daemons of one Redis.
"""

from cyclone_sse.presence.base import Member, Presence, Watcher

__all__ = ["Member", "Presence", "Watcher"]
