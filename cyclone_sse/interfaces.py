"""The contracts between the parts that vary: subscribers, history stores, brokers."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISubscriber(Interface):
    """One open client connection, as the channel registry sees it.

    SSE streams, long-poll requests (and later WebSockets) are interchangeable behind it.
    """

    def deliver(events, frame):  # type: ignore[no-untyped-def]
        """Hand over live events of one channel, oldest first; ``frame`` is their SSE
        bytes, joined once for all subscribers.

        Called on the fan-out hot path: must not block, log, or detach itself from the
        registry synchronously (the registry is iterating its subscriber set).  An event
        the subscriber already has (sent by its replay) must be skipped by ``seq``.
        """

    def heartbeat() -> None:
        """Keep the connection alive through idle proxies (SSE writes a comment)."""

    def close() -> None:
        """End the connection politely, e.g. at shutdown; the client will reconnect."""


class IHistory(Interface):
    """Where events get their ids and are kept for replay.

    Ids are opaque, CORS-safelisted strings of at most 128 bytes.  One id marks a point
    in the store's global order, so it resumes every channel of a stream at once.
    """

    def append(channel, data, name=None, publisher_id=None):  # type: ignore[no-untyped-def]
        """Store one event; return (maybe as a Deferred) ``(event, fresh)``.

        ``event`` carries its new id.  A repeated ``publisher_id`` on the same channel,
        while the first is retained, returns ``(first_event, False)`` and stores nothing:
        a publisher may retry without doubling deliveries.
        """

    def since(channels, last_id, limit):  # type: ignore[no-untyped-def]
        """Return (maybe as a Deferred) a ``Replay`` of the events after ``last_id`` on
        the given channels and ``*`` patterns, oldest first, at most ``limit``."""


class IBroker(Interface):
    """Turns published messages, from HTTP or an upstream system, into deliveries."""

    name = Attribute("Short name shown in /stats: 'http', 'redis', 'amqp'.")
    connected = Attribute("False while the upstream system is unreachable.")

    def publish(channel, data, name=None, publisher_id=None):  # type: ignore[no-untyped-def]
        """Publish one message; returns a Deferred firing with a ``PublishResult``."""

    def subscribe(channel):  # type: ignore[no-untyped-def]
        """A channel or pattern gained its first local subscriber."""

    def unsubscribe(channel):  # type: ignore[no-untyped-def]
        """A channel or pattern lost its last local subscriber."""

    def start() -> None:
        """Connect upstream (if any); called once the reactor runs."""

    def stop() -> object:
        """Disconnect; may return a Deferred."""
