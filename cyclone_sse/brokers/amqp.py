"""The AMQP broker (``--broker=amqp``, RabbitMQ and other 0-9-1 brokers).

A message published to the exchange (``--amqp-exchange-name``, type
``--amqp-exchange-type``) with routing key = channel name reaches the subscribers of
that channel.  The AMQP ``type`` property, when set, is the SSE event name, and
``message-id`` the publisher's id (duplicates are dropped).

Each daemon keeps its own in-memory history and its own queue, bound to the channels
its clients listen to.  The queue outlives a short disconnection (``x-expires``), so
what was published while this daemon was cut off is received, stored and delivered
once it reconnects.  ``POST /publish`` stores and delivers locally, then publishes to
the exchange for the other daemons (which skip nothing, and this one skips its echo).
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.channels import is_pattern
from cyclone_sse.checks import check_message
from cyclone_sse.errors import BrokerUnavailable, InvalidEvent
from cyclone_sse.links.amqp import AmqpAddress, AmqpLink, find_spec
from cyclone_sse.links.amqp_wire import Delivery, DeliveryReader, PublishFrames, TooLong
from cyclone_sse.links.tls import check_link_options

log = Logger()

#: Milliseconds the daemon's queue survives without a consumer (RabbitMQ x-expires).
QUEUE_EXPIRES_MS = 120_000
#: Header naming the daemon that published a message through POST /publish.
ORIGIN_HEADER = "x-cyclone-sse-origin"


class AmqpBroker(Broker):
    """Fan-out through an AMQP exchange; each daemon keeps its own history."""

    name = "amqp"
    confirms_subscriptions = True
    required_history = "memory"
    history_reason = ("with --broker=amqp each daemon keeps its own history in memory, "
                      "or shares one in a RabbitMQ stream (--history=amqp-stream)")

    def __init__(self, registry: Any, history: Any, settings: Any, reactor: Any = None) -> None:
        super().__init__(registry, history, settings, reactor)
        self.me = secrets.token_hex(8)
        self.exchange = settings.amqp_exchange_name
        self.exchange_type = settings.amqp_exchange_type
        self.queue_name = f"cyclone-sse.{self.me}"
        self.channel_id = settings.amqp_channel
        self.channel: Any = None
        self.client: Any = None
        self._frames = PublishFrames(self.channel_id, self.exchange, {ORIGIN_HEADER: self.me})
        self.received = 0
        self.rejected = 0
        self._warned_patterns = False
        self.link = AmqpLink(self.reactor, AmqpAddress.from_settings(settings),
                             find_spec(settings.amqp_spec or None),
                             on_up=self._up, on_down=self._down)
        self.link.setServiceParent(self)

    @classmethod
    def check_options(cls, settings: Any) -> None:
        super().check_options(settings)
        check_link_options(settings, "amqp", AmqpAddress.from_url)
        try:
            find_spec(settings.amqp_spec or None)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None

    @property
    def connected(self) -> bool:
        return self.link.ready

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "connected": self.connected, "outages": self.link.outages,
                "received": self.received, "rejected": self.rejected}

    @defer.inlineCallbacks
    def _up(self, client: Any) -> Any:
        channel = yield client.channel(self.channel_id)
        yield channel.channel_open()
        yield channel.exchange_declare(exchange=self.exchange, type=self.exchange_type,
                                       durable=True)
        yield channel.queue_declare(queue=self.queue_name, durable=False,
                                    arguments={"x-expires": QUEUE_EXPIRES_MS})
        self.channel, self.client = channel, client
        for name in self.registry.names():
            yield self._bind(name)
        # deliveries are read as frames arrive (amqp_wire), not through txamqp's queues
        client.reader = DeliveryReader(self.channel_id, self._received,
                                       self.settings.max_body)
        yield channel.basic_consume(queue=self.queue_name, no_ack=True)

    def _down(self) -> None:
        self.channel = self.client = None

    # bindings -----------------------------------------------------------------------

    def _binding_key(self, name: str) -> str | None:
        """The routing-key binding that brings ``name`` (a channel or pattern) here.

        A topic exchange gets ``#`` for any ``*`` part (over-binding is harmless: the
        registry delivers only what matches); a fanout exchange binds once; a direct
        exchange cannot carry patterns."""
        if not is_pattern(name):
            return "" if self.exchange_type == "fanout" else name
        if self.exchange_type == "topic":
            return "#" if name != "*" and not name.endswith(".*") else name[:-1] + "#"
        if self.exchange_type == "fanout":
            return ""
        if not self._warned_patterns:
            self._warned_patterns = True
            log.warn("pattern subscriptions need a topic or fanout AMQP exchange; "
                     "{exchange} is {type}", exchange=self.exchange, type=self.exchange_type)
        return None

    def _bind(self, name: str) -> defer.Deferred[Any]:
        key = self._binding_key(name)
        if self.channel is None or key is None:
            return defer.succeed(None)
        return self.channel.queue_bind(queue=self.queue_name, exchange=self.exchange,
                                       routing_key=key)

    def subscribe(self, channel: str) -> None:
        d = self._bind(channel)
        d.addErrback(self._binding_failed, channel)
        d.addBoth(self._subscribed, channel)  # bound: published events now reach us

    def unsubscribe(self, channel: str) -> None:
        key = self._binding_key(channel)
        if self.channel is None or key is None or self.exchange_type == "fanout":
            return
        if any(self._binding_key(other) == key for other in self.registry.names()):
            return  # another subscription still needs this binding
        self.channel.queue_unbind(queue=self.queue_name, exchange=self.exchange,
                                  routing_key=key).addErrback(self._binding_failed, channel)

    def _binding_failed(self, failure: Any, channel: str) -> None:
        if not self.running or not self.link.ready:
            return  # the connection went: the link reports it, and _up binds anew
        log.warn("amqp binding for {channel} failed: {error}", channel=channel,
                 error=failure.getErrorMessage())

    # incoming -----------------------------------------------------------------------

    def _received(self, message: Delivery) -> None:
        headers = message.properties.get("headers") or {}
        if headers.get(ORIGIN_HEADER) == self.me:
            return  # published here, already stored and delivered
        event = self._read(message)
        if event is not None:
            self._store_and_deliver(*event)

    def _read(self, message: Delivery) -> tuple[str, str, str | None, str | None] | None:
        """A message's channel, data, event name and publisher id, checked as every
        publish is; None for one that cannot be read (counted, logged once a thousand)."""
        properties = message.properties
        try:
            if message.problem:
                raise ValueError(message.problem)
            channel = message.routing_key
            data = message.body.decode("utf-8")
            name = properties.get("type") or None
            publisher_id = properties.get("message-id") or None
            if not isinstance(name or "", str) or not isinstance(publisher_id or "", str):
                raise ValueError("the type or message-id property is not UTF-8")
            check_message(channel, data, name, publisher_id)
        except Exception as exc:
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 1000 == 0:
                log.warn("ignored AMQP message for {key!r} ({count} so far): {error}",
                         key=message.routing_key[:200], count=self.rejected, error=exc)
            return None
        self.received += 1
        return channel, data, name, publisher_id

    def _store_and_deliver(self, channel: str, data: str, name: str | None,
                           publisher_id: str | None, grip: Any = None) -> Published:
        return Broker.publish_now(self, channel, data, name, publisher_id, grip)

    # publishing ---------------------------------------------------------------------

    @property
    def immediate(self) -> bool:
        return True  # (its history is the memory one, which answers at once)

    def publish_now(self, channel: str, data: str, name: str | None = None,
                    publisher_id: str | None = None, grip: Any = None) -> Published:
        """Sent to the exchange for the other daemons, then stored and delivered here;
        ``BrokerUnavailable`` while RabbitMQ is out of reach, ``InvalidEvent`` for what
        AMQP cannot carry (nothing is stored then)."""
        if not self.connected or self.channel is None:
            raise BrokerUnavailable(f"AMQP broker at {self.link.address} is unreachable: "
                                    "not published, retry later")
        if self.channel.closed:  # (the server closed it: set everything up anew)
            self.client.transport.abortConnection()
            raise BrokerUnavailable(f"AMQP broker at {self.link.address} closed the "
                                    "channel: not published, retry later")
        try:
            frames = self._frames.encode(channel, data.encode("utf-8"), name, publisher_id,
                                         self.client.MAX_LENGTH)
        except TooLong as exc:
            raise InvalidEvent(str(exc), field=exc.field) from None
        self.client.send_now(frames)
        return self._store_and_deliver(channel, data, name, publisher_id, grip)

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None, grip: Any = None) -> defer.Deferred[Published]:
        return defer.maybeDeferred(self.publish_now, channel, data, name, publisher_id, grip)
