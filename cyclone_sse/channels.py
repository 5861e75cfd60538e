"""Channel names and patterns.

A channel name is 1-200 characters of ``A-Z a-z 0-9 _ - . : @ / = + #``: enough for
``user:42``, ``room/7`` or ``prices.EUR`` and safe in Redis and AMQP routing keys (``#``
marks a user-limited channel, ``notify#42``, see ``auth.policy``; in a URL it is
written ``%23``).
A subscriber may also use ``*`` (any run of characters, Redis ``PSUBSCRIBE`` style) to
receive every matching channel; publishers always name one concrete channel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cyclone_sse.errors import InvalidChannel

MAX_CHANNEL_LENGTH = 200
_NAME = re.compile(rf"[A-Za-z0-9_\-.:@/=+#]{{1,{MAX_CHANNEL_LENGTH}}}\Z")
_PATTERN = re.compile(rf"[A-Za-z0-9_\-.:@/=+#*]{{1,{MAX_CHANNEL_LENGTH}}}\Z")


def is_pattern(name: str) -> bool:
    return "*" in name


def check_channel(name: str, field: str = "channel") -> str:
    """A concrete channel, as a publisher names it."""
    return _check(name, _NAME, field, "")


def check_subscription(name: str, field: str = "channels") -> str:
    """A channel or a ``*`` pattern, as a subscriber names it."""
    return _check(name, _PATTERN, field, " (and * in patterns)")


def _check(name: str, allowed: re.Pattern[str], field: str, extra: str) -> str:
    if not allowed.match(name):
        raise InvalidChannel(
            f"invalid channel name {name[:MAX_CHANNEL_LENGTH]!r}: use 1-{MAX_CHANNEL_LENGTH} "
            f"characters of A-Z a-z 0-9 _ - . : @ / = + #{extra}", field=field)
    return name


def split_channels(values: Iterable[str], limit: int, field: str = "channels") -> list[str]:
    """Channels from repeated query arguments and/or comma lists, validated and
    de-duplicated in first-seen order."""
    seen: dict[str, None] = {}
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name:
                seen[check_subscription(name, field)] = None
    if not seen:
        raise InvalidChannel(f"no channel given: add ?{field}=NAME", field=field)
    if limit and len(seen) > limit:
        raise InvalidChannel(f"too many channels: {len(seen)} > {limit}", field=field)
    return list(seen)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``news.*`` → a regex matching every channel the pattern names."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


class PatternIndex:
    """Patterns filed by their literal prefix (the text before the first ``*``).

    The patterns that may match a channel are found with one dict lookup per distinct
    prefix length no longer than the channel, and only those are tried: a lookup costs
    O(prefix lengths + candidates), not O(all patterns)."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, dict[str, re.Pattern[str]]] = {}
        self._lengths: dict[int, int] = {}  # prefix length → patterns filed under it
        self._sorted: list[int] = []

    def __len__(self) -> int:
        return sum(self._lengths.values())

    def add(self, pattern: str) -> None:
        prefix = pattern.split("*", 1)[0]
        group = self._by_prefix.setdefault(prefix, {})
        if pattern not in group:
            group[pattern] = compile_pattern(pattern)
            self._lengths[len(prefix)] = self._lengths.get(len(prefix), 0) + 1
            self._sorted = sorted(self._lengths)

    def remove(self, pattern: str) -> None:
        prefix = pattern.split("*", 1)[0]
        group = self._by_prefix.get(prefix)
        if group is None or group.pop(pattern, None) is None:
            return
        if not group:
            del self._by_prefix[prefix]
        left = self._lengths[len(prefix)] - 1
        if left:
            self._lengths[len(prefix)] = left
        else:
            del self._lengths[len(prefix)]
        self._sorted = sorted(self._lengths)

    def matching(self, channel: str) -> list[str]:
        """The patterns that match ``channel``."""
        found: list[str] = []
        by_prefix = self._by_prefix
        size = len(channel)
        for length in self._sorted:
            if length > size:
                break
            group = by_prefix.get(channel[:length])
            if group:
                found.extend(p for p, regex in group.items() if regex.match(channel))
        return found
