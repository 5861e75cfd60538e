"""History stores: where events get their ids and are kept for replay.

``memory`` (the default) and ``redis`` follow the one replay rule in ``base``; the
Redis store is imported only when asked for, as it needs txredisapi.
"""

from cyclone_sse.history.base import (
    DEFAULT_BYTES,
    DEFAULT_CHANNEL_BYTES,
    DEFAULT_CHANNELS,
    DEFAULT_REPLAY_LIMIT,
    DEFAULT_SIZE,
    DEFAULT_TTL,
    GAP_EXPIRED,
    GAP_LIMIT,
    GAP_UNAVAILABLE,
    GAP_UNKNOWN,
    Replay,
)
from cyclone_sse.history.memory import MemoryHistory

__all__ = [
    "DEFAULT_BYTES",
    "DEFAULT_CHANNELS",
    "DEFAULT_CHANNEL_BYTES",
    "DEFAULT_REPLAY_LIMIT",
    "DEFAULT_SIZE",
    "DEFAULT_TTL",
    "GAP_EXPIRED",
    "GAP_LIMIT",
    "GAP_UNAVAILABLE",
    "GAP_UNKNOWN",
    "MemoryHistory",
    "Replay",
]
