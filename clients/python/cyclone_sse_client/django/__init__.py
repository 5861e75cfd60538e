"""The Django app (``INSTALLED_APPS += ["cyclone_sse_client.django"]``): ``send_event``
after the transaction commits, per-user channels and tokens, the token view and the
``{% cyclone_sse_stream %}`` template tag.  Settings: one ``CYCLONE_SSE`` dict."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cyclone_sse_client.http import AsyncPublisher, Channels, Published, Publisher
from cyclone_sse_client.tokens import make_token

log = logging.getLogger("cyclone_sse")

#: Every key of ``settings.CYCLONE_SSE`` and its default.
DEFAULTS: dict[str, Any] = {
    "URL": "http://127.0.0.1:8888",    # where this application publishes (HTTP)
    "PUBLIC_URL": None,                # where browsers subscribe (default: URL)
    "KEY": None,                       # the daemon's --http-secret
    "JWT_SECRET": None,                # the daemon's --jwt-secret (tokens for pages)
    "TOKEN_TTL": 3600,                 # seconds a page's token lives (it is renewed)
    "USER_CHANNEL": "user#{id}",       # a user's own channel (# limits it to that user)
    "TRANSPORT": "http",               # http, redis or amqp
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "REDIS_PREFIX": "cyclone-sse",
    "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "AMQP_EXCHANGE": "sse-cyclone-server",
    "TIMEOUT": 5.0,
}


def config() -> dict[str, Any]:
    """``settings.CYCLONE_SSE`` over the defaults; unknown keys are an error."""
    from django.conf import settings
    given = getattr(settings, "CYCLONE_SSE", {})
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"CYCLONE_SSE: unknown keys {sorted(unknown)}; known: "
                         f"{sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **given}
    merged["PUBLIC_URL"] = merged["PUBLIC_URL"] or merged["URL"]
    return merged


def publisher() -> Any:
    """The publisher ``CYCLONE_SSE["TRANSPORT"]`` names."""
    c = config()
    if c["TRANSPORT"] == "redis":
        from cyclone_sse_client.redis import RedisPublisher
        return RedisPublisher(c["REDIS_URL"], c["REDIS_PREFIX"], c["TIMEOUT"])
    if c["TRANSPORT"] == "amqp":
        from cyclone_sse_client.amqp import AmqpPublisher
        return AmqpPublisher(c["AMQP_URL"], c["AMQP_EXCHANGE"], timeout=c["TIMEOUT"])
    if c["TRANSPORT"] != "http":
        raise ValueError(f"CYCLONE_SSE['TRANSPORT'] = {c['TRANSPORT']!r}: http, redis or amqp")
    return Publisher(c["URL"], key=c["KEY"], timeout=c["TIMEOUT"])


def send_event(channel: Channels, data: Any, event: str | None = None,
               id: str | None = None, using: str | None = None) -> list[Published] | None:
    """Publish — at once, or, inside ``transaction.atomic``, once it commits (a rolled
    back change notifies nobody; returns None then, and a failed publish is logged)."""
    from django.db import transaction

    def publish() -> Any:
        return publisher().publish(channel, data, event, id)

    if transaction.get_connection(using).in_atomic_block:
        transaction.on_commit(publish, using=using, robust=True)
        return None
    return publish()  # type: ignore[no-any-return]


async def asend_event(channel: Channels, data: Any, event: str | None = None,
                      id: str | None = None) -> Any:
    """``send_event`` for async views and tasks: publishes at once (Django runs no
    transactions in async code)."""
    c = config()
    if c["TRANSPORT"] == "http":
        return await AsyncPublisher(c["URL"], key=c["KEY"], timeout=c["TIMEOUT"]).publish(
            channel, data, event, id)
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: publisher().publish(channel, data, event, id))


def user_channel(user: Any) -> str:
    """The user's own channel (``user#42``): only a token whose ``sub`` is 42 reads it."""
    return str(config()["USER_CHANNEL"]).format(id=user.pk)


def subscriber_token(user: Any, channels: list[str] | None = None) -> str:
    """A token for ``user``'s page: ``sub`` is the user's pk; ``channels`` are the extra
    (``token`` policy) channels it may read — its own channel needs none."""
    c = config()
    if not c["JWT_SECRET"]:
        raise ValueError("CYCLONE_SSE['JWT_SECRET'] is needed for tokens (--jwt-secret)")
    return make_token(c["JWT_SECRET"], sub=str(user.pk), channels=channels,
                      ttl=c["TOKEN_TTL"])


__all__ = ["asend_event", "config", "publisher", "send_event", "subscriber_token",
           "user_channel"]
