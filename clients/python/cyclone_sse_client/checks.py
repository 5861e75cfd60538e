"""The daemon's rules for channel and event names, checked before writing straight into
Redis or RabbitMQ (over HTTP the daemon answers 400 itself; there nobody would).
tests/test_client.py checks they are the daemon's."""

from __future__ import annotations

import re

from cyclone_sse_client.errors import BadRequest

CHANNEL = re.compile(r"[A-Za-z0-9_\-.:@/=+#]{1,200}\Z")
#: Event names only the daemon sends.
RESERVED_EVENTS = frozenset({"history-gap", "token-expired", "stream-open", "channel"})


def check(channels: list[str], event: str | None) -> None:
    """``BadRequest`` for a channel or event name the daemon would refuse."""
    for channel in channels:
        if not CHANNEL.match(channel):
            raise BadRequest(f"invalid channel name {channel[:200]!r}: use 1-200 of "
                             "A-Z a-z 0-9 _ - . : @ / = + #")
    if event is not None:
        if re.search(r"[\r\n\x00]", event):
            raise BadRequest("event must not contain CR, LF or NUL")
        if event in RESERVED_EVENTS:
            raise BadRequest(f"event name {event!r} is reserved")
