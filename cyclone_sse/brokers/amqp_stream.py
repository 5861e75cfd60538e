"""The AMQP broker with its history in a RabbitMQ stream (``--broker=amqp
--history=amqp-stream``): a stream queue (``--amqp-stream``) bound to the exchange
keeps every event published to it — through any daemon, or by any AMQP client — once,
in one order, for ``--history-bytes`` and ``--history-ttl``.

Every daemon reads the whole stream (``x-stream-offset``, acknowledging as it goes),
keeps it in memory (``history.amqp_stream``) and delivers each event as it reads it;
an event's id is its offset, the same on every daemon.  A daemon that starts (or
reconnects) reads from the stream's start (or from where it was) and writes a sync
mark into it: once the mark comes back it has read everything before, and only then
takes publishes and lets subscriptions go live.  ``POST /publish`` sends the event to
the exchange and answers once it came back through the stream, with its id.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse.brokers.amqp import ORIGIN_HEADER, AmqpBroker
from cyclone_sse.brokers.base import Published
from cyclone_sse.errors import BrokerUnavailable, InvalidEvent
from cyclone_sse.history.amqp_stream import StreamHistory
from cyclone_sse.links.amqp_wire import Delivery, DeliveryReader, PublishFrames, TooLong, ack_frame

log = Logger()

#: Messages the stream may send before this daemon acknowledges (basic.qos: a stream
#: consumer must set it); acknowledged every half of it.
PREFETCH = 2000
#: Header of a daemon's sync mark (its value: the daemon), skipped by every reader.
SYNC_HEADER = "x-cyclone-sse-sync"
#: Seconds a publish waits to come back through the stream before it is answered 503.
PUBLISH_WAIT = 10.0


class AmqpStreamBroker(AmqpBroker):
    """Fan-out and shared history through a RabbitMQ stream."""

    required_history = "amqp-stream"
    history_reason = "this AMQP broker reads its history from a RabbitMQ stream"

    def __init__(self, registry: Any, history: Any, settings: Any, reactor: Any = None) -> None:
        super().__init__(registry, history, settings, reactor)
        self.stream = settings.amqp_stream
        self.copy: StreamHistory = history  # (this daemon's copy of the stream)
        self._marks = PublishFrames(self.channel_id, "", {SYNC_HEADER: self.me})
        self.next_offset: int | None = None  # where to read on from (None: the start)
        self.caught_up = False
        self.read_once = False  # the stream was read to its end once: the copy is whole
        self._readers: list[defer.Deferred[None]] = []  # replays waiting for that
        self.mark = ""  # the sync mark this daemon waits for
        self.unacked = 0
        self.waiting: dict[str, tuple[defer.Deferred[Published], Any]] = {}
        self._counter = 0

    @classmethod
    def check_options(cls, settings: Any) -> None:
        super().check_options(settings)
        if settings.amqp_exchange_type not in ("topic", "fanout"):
            raise ValueError(f"--amqp-exchange-type={settings.amqp_exchange_type}: the "
                             "stream of --history=amqp-stream takes every channel: use a "
                             "topic or fanout exchange")
        if not settings.amqp_stream:
            raise ValueError("--amqp-stream: name the stream queue")

    @property
    def connected(self) -> bool:
        return self.link.ready and self.caught_up

    def stats(self) -> dict[str, object]:
        found = super().stats()
        found.update({"stream": self.stream, "caught_up": self.caught_up,
                      "next_offset": self.next_offset})
        return found

    @defer.inlineCallbacks
    def _up(self, client: Any) -> Any:
        self.caught_up = False
        channel = yield client.channel(self.channel_id)
        yield channel.channel_open()
        yield channel.exchange_declare(exchange=self.exchange, type=self.exchange_type,
                                       durable=True)
        settings = self.settings
        arguments: dict[str, Any] = {"x-queue-type": "stream"}
        if settings.history_bytes:
            arguments["x-max-length-bytes"] = settings.history_bytes
        if settings.history_ttl:
            arguments["x-max-age"] = f"{max(1, int(settings.history_ttl))}s"
        yield channel.queue_declare(queue=self.stream, durable=True, arguments=arguments)
        yield channel.queue_bind(queue=self.stream, exchange=self.exchange,
                                 routing_key="#" if self.exchange_type == "topic" else "")
        yield channel.basic_qos(prefetch_count=PREFETCH)
        self.channel, self.client, self.unacked = channel, client, 0
        client.reader = DeliveryReader(self.channel_id, self._received,
                                       self.settings.max_body)
        start: Any = "first" if self.next_offset is None else self.next_offset
        yield channel.basic_consume(queue=self.stream, no_ack=False,
                                    arguments={"x-stream-offset": start})
        self.mark = secrets.token_hex(8)
        client.send_now(self._marks.encode(self.stream, b"", message_id=self.mark))

    def _down(self) -> None:
        super()._down()
        self.caught_up = False
        for d, _ in list(self.waiting.values()):
            d.errback(BrokerUnavailable(
                f"the AMQP broker at {self.link.address} went away before the event came "
                "back through the stream: it may or may not be stored; retry with the "
                "same 'id' to publish it exactly once"))
        self.waiting.clear()

    # every channel is in the stream: a subscription waits only for the catch-up -------

    def subscribe(self, channel: str) -> None:
        if self.caught_up:
            self._subscribed(None, channel)

    def unsubscribe(self, channel: str) -> None:
        pass

    # reading the stream ---------------------------------------------------------------

    def _received(self, message: Delivery) -> None:
        self.unacked += 1
        if self.unacked >= PREFETCH // 2 and self.client is not None:
            self.client.send_now(ack_frame(self.channel_id, message.tag))
            self.unacked = 0
        properties = message.properties
        headers = properties.get("headers") or {}
        offset = headers.get("x-stream-offset")
        if not isinstance(offset, int):
            return  # (not from a stream: cannot be placed in its order)
        seq = offset + 1
        self.next_offset = seq
        if SYNC_HEADER in headers:
            self.copy.skip(seq)
            if headers[SYNC_HEADER] == self.me and properties.get("message-id") == self.mark:
                self._caught_up()
            return
        read = self._read(message)
        if read is None:
            self.copy.skip(seq)
            return
        channel, data, name, publisher_id = read
        event, fresh = self.copy.store(seq, channel, data, name, publisher_id)
        waiting = None
        if headers.get(ORIGIN_HEADER) == self.me:
            waiting = self.waiting.pop(properties.get("correlation-id") or "", None)
        if fresh:
            if waiting is not None:
                event.grip = waiting[1]
            subscribers = self.registry.deliver(event)
        else:
            subscribers = 0
        if waiting is not None:
            waiting[0].callback(Published(channel, event.id, subscribers,
                                          duplicate=not fresh))

    def _caught_up(self) -> None:
        self.caught_up = True
        if not self.read_once:
            self.read_once = True
            waiting, self._readers = self._readers, []
            for d in waiting:
                d.callback(None)
        for channel in list(self._pending):
            self._subscribed(None, channel)

    def when_subscribed(self, channels: list[str]) -> defer.Deferred[None]:
        """Until this daemon first read the stream to its end, its copy is not the
        history: a replay waits for it (as long as it takes).  Afterwards, as any
        broker (a reconnection's catch-up only adds what came meanwhile)."""
        if self.read_once:
            return super().when_subscribed(channels)
        d: defer.Deferred[None] = defer.Deferred()
        self._readers.append(d)
        return d

    # publishing -----------------------------------------------------------------------

    @property
    def immediate(self) -> bool:
        return False  # (answered when the event comes back through the stream)

    def publish_now(self, channel: str, data: str, name: str | None = None,
                    publisher_id: str | None = None, grip: Any = None) -> Published:
        raise NotImplementedError("publish: the stream assigns the id")

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None, grip: Any = None) -> defer.Deferred[Published]:
        """Sent to the exchange; answered once the stream gave it back (its id), 503
        while RabbitMQ is out of reach or this daemon has not read the stream yet."""
        if not self.connected or self.channel is None:
            return defer.fail(BrokerUnavailable(
                f"AMQP broker at {self.link.address} is unreachable (or its stream not "
                "read yet): not published, retry later"))
        self._counter += 1
        token = str(self._counter)
        try:
            frames = self._frames.encode(channel, data.encode("utf-8"), name, publisher_id,
                                         self.client.MAX_LENGTH, correlation_id=token)
        except TooLong as exc:
            return defer.fail(InvalidEvent(str(exc), field=exc.field))
        d: defer.Deferred[Published] = defer.Deferred()
        self.waiting[token] = (d, grip)
        self.client.send_now(frames)

        def late(failure: Any) -> Any:
            self.waiting.pop(token, None)
            if failure.check(defer.TimeoutError, defer.CancelledError):
                raise BrokerUnavailable(
                    "RabbitMQ did not give the event back through the stream in time: it "
                    "may or may not be stored; retry with the same 'id' to publish it "
                    "exactly once")
            return failure

        d.addTimeout(PUBLISH_WAIT, self.reactor)
        d.addErrback(late)
        return d
