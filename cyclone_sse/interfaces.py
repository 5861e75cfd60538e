"""The contracts between the parts that vary: subscribers, history stores, brokers, and
the optional capabilities some of them have.

A part with a life cycle (a link to connect, a sweep to run) also provides Twisted's
``IService``; the application adds such parts to its service tree.  Callers test for
an interface with ``providedBy``, never for an attribute with ``getattr``.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISubscriber(Interface):
    """One open client connection, as the channel registry and the subscription
    protocol (``cyclone_sse.subscription``) see it.

    SSE streams, long-poll requests (and later WebSockets) are interchangeable behind
    it.  ``cyclone_sse.subscription.Subscriber`` implements the replay→live hand-over
    that every transport shares.
    """

    access = Attribute("None, or what decides (``may_read(channel)``) whether a channel "
                       "one of its patterns reached may be delivered or replayed to it.")

    def deliver(events, frame):  # type: ignore[no-untyped-def]
        """Hand over live events of one channel, oldest first; ``frame`` is their SSE
        bytes, joined once for all subscribers.

        Called on the fan-out hot path: must not block, log, or detach itself from the
        registry synchronously (the registry is iterating its subscriber set).  Until
        ``start_live`` the events are held; afterwards an event the subscriber already
        has (sent by its replay) is skipped by ``seq``.
        """

    def start_live(replay, last_id):  # type: ignore[no-untyped-def]
        """The replay for ``last_id`` (the client's position, or None) is in: send
        the gap signal if any, the replayed events, then the held live events newer
        than them, and deliver live events from now on."""

    def heartbeat() -> None:
        """Keep the connection alive through idle proxies (SSE writes a comment)."""

    def close() -> None:
        """End the connection politely, e.g. at shutdown; the client will reconnect."""

    def disconnected() -> None:
        """The client is gone: stop timers, write nothing more."""


class IHistory(Interface):
    """Where events get their ids (``cyclone_sse.event.EventId``) and are kept for
    replay.  One id marks a point in the store's global order, so it resumes every
    channel of a stream at once."""

    def append(channel, data, name=None, publisher_id=None):  # type: ignore[no-untyped-def]
        """Store one event; return (maybe as a Deferred) ``(event, fresh)``.

        ``event`` carries its new id.  A repeated ``publisher_id`` on the same channel,
        while the first is retained, returns ``(first_event, False)`` and stores nothing:
        a publisher may retry without doubling deliveries.
        """

    def since(channels, last_id, limit):  # type: ignore[no-untyped-def]
        """Return (maybe as a Deferred) a ``Replay`` of the events after ``last_id``
        (the text a client sent, or None) on the given channels and ``*`` patterns,
        oldest first, at most ``limit``, following ``history.base.assemble``."""


class IRedisHistory(IHistory):
    """A history kept in Redis whose ``append`` also announces every stored event on
    the pub/sub channel ``<prefix>:ev:<channel>`` (what the Redis broker listens to)."""

    prefix = Attribute("Key prefix of every key and pub/sub channel of this history.")
    link = Attribute("The ``RedisLink`` its commands go through (address, command()).")


class IStats(Interface):
    """A part that reports numbers for /stats, Prometheus and Graphite."""

    def stats() -> dict[str, object]:
        """Plain JSON-able numbers and flags, cheap to compute."""


class IBroker(Interface):
    """Turns published messages, from HTTP or an upstream system, into deliveries.

    The registry tells it (``subscribe``/``unsubscribe``) which channels and patterns
    local clients listen to, so it can subscribe upstream to just those.
    """

    name = Attribute("Short name shown in /stats: 'http', 'redis', 'amqp'.")
    connected = Attribute("False while the upstream system is unreachable.")

    def publish(channel, data, name=None, publisher_id=None):  # type: ignore[no-untyped-def]
        """Publish one message; returns a Deferred firing with a ``Published``."""

    def subscribe(channel):  # type: ignore[no-untyped-def]
        """A channel or pattern gained its first local subscriber."""

    def unsubscribe(channel):  # type: ignore[no-untyped-def]
        """A channel or pattern lost its last local subscriber."""

    def when_subscribed(channels):  # type: ignore[no-untyped-def]
        """A Deferred that fires once upstream delivers these channels (at once for a
        local broker), so a replay read afterwards cannot miss an event announced in
        between.  It never fails, and fires after a bounded wait during an outage."""

    def stats() -> dict[str, object]:
        """``name``, ``connected`` and whatever else the broker counts."""
