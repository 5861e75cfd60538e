"""Publish to cyclone-sse from Python: over HTTP (``Publisher``, ``AsyncPublisher``,
``send_event``), into its Redis history (``RedisPublisher``), to its AMQP exchange
(``AmqpPublisher``); ``make_token`` for subscriber and publisher tokens.  Standard
library only, unless you use Redis (redis-py), AMQP (pika) or the Django app."""

from cyclone_sse_client.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    PublishError,
    Unauthorized,
    Unavailable,
)
from cyclone_sse_client.http import AsyncPublisher, Published, Publisher, send_event
from cyclone_sse_client.tokens import make_token

__all__ = ["AmqpPublisher", "AsyncPublisher", "BadRequest", "Forbidden", "PayloadTooLarge",
           "PublishError", "Published", "Publisher", "RedisPublisher", "Unauthorized",
           "Unavailable", "make_token", "send_event"]


def __getattr__(name: str) -> object:
    # the Redis and AMQP publishers import their libraries only when asked for
    if name == "RedisPublisher":
        from cyclone_sse_client.redis import RedisPublisher
        return RedisPublisher
    if name == "AmqpPublisher":
        from cyclone_sse_client.amqp import AmqpPublisher
        return AmqpPublisher
    raise AttributeError(name)
