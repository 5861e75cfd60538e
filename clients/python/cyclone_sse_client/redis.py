"""Publishing straight into the daemon's Redis history (``--history=redis``) with
redis-py: the Lua script the daemon itself appends with, so the event is durable the
moment this returns — stored even while no daemon runs, replayed to a subscriber that
resumes from an older id, and announced to every daemon listening."""

from __future__ import annotations

from importlib import resources
from typing import Any

from cyclone_sse_client.checks import check
from cyclone_sse_client.errors import PublishError, Unavailable
from cyclone_sse_client.http import Channels, Published, as_data

#: The daemon's defaults for what its history keeps (``--history-*``); pass yours.
DEFAULT_LIMITS = {"size": 1000, "ttl": 3600.0, "channels": 10000,
                  "max_bytes": 128 * 1024 * 1024, "channel_bytes": 8 * 1024 * 1024}


def _script(name: str) -> str:
    return (resources.files("cyclone_sse_client") / "lua" / name).read_text()


class RedisPublisher:
    """``RedisPublisher("redis://127.0.0.1:6379/0").publish("news", {"a": 1})``.

    ``prefix`` is the daemon's ``--redis-prefix``; the limits are its ``--history-size``,
    ``--history-ttl``, ``--history-channels``, ``--history-bytes`` and
    ``--history-channel-bytes`` (the script applies them as it appends)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "cyclone-sse",
                 timeout: float = 5.0, client: Any = None, **limits: float) -> None:
        import redis  # the "redis" extra
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._response_error = redis.ResponseError
        self.client = client or redis.Redis.from_url(url, socket_timeout=timeout,
                                                     socket_connect_timeout=timeout)
        self.prefix = prefix
        unknown = set(limits) - set(DEFAULT_LIMITS)
        if unknown:
            raise TypeError(f"unknown limits {sorted(unknown)}: use {sorted(DEFAULT_LIMITS)}")
        self.limits = {**DEFAULT_LIMITS, **limits}
        self._append = self.client.register_script(_script("append.lua"))
        self._migrate = self.client.register_script(_script("migrate.lua"))
        self._migrated = False

    def publish(self, channel: Channels, data: Any, event: str | None = None,
                id: str | None = None) -> list[Published]:
        """Store and announce the event on each channel; with your own ``id`` a retry is
        kept once (``duplicate`` tells).  ``subscribers`` counts the Redis connections
        that heard the announcement (daemons listening), not browsers."""
        channels = [channel] if isinstance(channel, str) else list(channel)
        text = as_data(data)
        check(channels, event)
        limits = self.limits
        try:
            if not self._migrated:  # (brings an older daemon's layout up to date, once)
                self._migrate(args=[self.prefix])
                self._migrated = True
            published = []
            for name in channels:
                reply = self._append(args=[
                    self.prefix, name, text, event or "", id or "", int(limits["size"]),
                    int(limits["ttl"] * 1000), int(limits["channels"]),
                    int(limits["max_bytes"]), int(limits["channel_bytes"]), 0])
                published.append(self._published(name, reply))
            return published
        except self._errors as exc:
            raise Unavailable(f"Redis: {exc}") from exc
        except self._response_error as exc:
            raise PublishError(f"Redis refused the append: {exc}") from exc

    def publish_many(self, events: Any) -> list[Published]:
        """Many events in one round trip (a pipeline of the append script), in order:
        ``[{"channel": ..., "data": ..., "event": ..., "id": ...}, ...]``."""
        rows: list[tuple[str, str, Any, Any]] = []
        for event in events:
            channels = event.get("channels") or [event["channel"]]
            check(list(channels), event.get("event"))
            rows.extend((name, as_data(event["data"]), event.get("event"), event.get("id"))
                        for name in channels)
        limits = self.limits
        try:
            if not self._migrated:
                self._migrate(args=[self.prefix])
                self._migrated = True
            pipe = self.client.pipeline(transaction=False)
            for name, text, event_name, event_id in rows:
                self._append(args=[
                    self.prefix, name, text, event_name or "", event_id or "",
                    int(limits["size"]), int(limits["ttl"] * 1000), int(limits["channels"]),
                    int(limits["max_bytes"]), int(limits["channel_bytes"]), 0], client=pipe)
            replies = pipe.execute()
        except self._errors as exc:
            raise Unavailable(f"Redis: {exc}") from exc
        except self._response_error as exc:
            raise PublishError(f"Redis refused the append: {exc}") from exc
        return [self._published(name, reply) for (name, *_), reply in
                zip(rows, replies, strict=True)]

    @staticmethod
    def _published(channel: str, reply: list[Any]) -> Published:
        epoch = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        return Published(channel, f"{epoch}-{int(reply[1])}", int(reply[3]),
                         bool(int(reply[2])))

    def close(self) -> None:
        self.client.close()
