"""Publishing to the daemon's AMQP exchange (``--broker=amqp``) with pika: the routing key
is the channel, the message ``type`` the event name, ``message_id`` your id.  With
publisher confirms, a return means RabbitMQ took the message; each daemon's queue then
delivers it (a daemon not running has no queue bound, and misses it)."""

from __future__ import annotations

from typing import Any

from cyclone_sse_client.checks import check
from cyclone_sse_client.errors import Unavailable
from cyclone_sse_client.http import Channels, as_data


class AmqpPublisher:
    """``AmqpPublisher("amqp://guest:guest@127.0.0.1:5672/%2F").publish("news", "x")``.

    ``exchange`` and ``exchange_type`` are the daemon's ``--amqp-exchange-name`` and
    ``--amqp-exchange-type``."""

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
                 exchange: str = "sse-cyclone-server", exchange_type: str = "direct",
                 timeout: float = 5.0) -> None:
        import pika  # the "amqp" extra
        self._pika = pika
        self.url = url
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.timeout = timeout
        self.connection: Any = None
        self.channel: Any = None

    def _open(self) -> Any:
        pika = self._pika
        if self.channel is None or self.channel.is_closed:
            parameters = pika.URLParameters(self.url)
            parameters.socket_timeout = self.timeout
            parameters.blocked_connection_timeout = self.timeout
            try:
                self.connection = pika.BlockingConnection(parameters)
            except pika.exceptions.AMQPError as exc:
                raise Unavailable(f"AMQP: cannot connect: {exc!r}") from exc
            self.channel = self.connection.channel()
            self.channel.exchange_declare(self.exchange, self.exchange_type, durable=True)
            self.channel.confirm_delivery()
        return self.channel

    def publish(self, channel: Channels, data: Any, event: str | None = None,
                id: str | None = None) -> None:
        """Hand the event to RabbitMQ, confirmed; ``Unavailable`` if it was not."""
        pika = self._pika
        properties = pika.BasicProperties(type=event, message_id=id, delivery_mode=2,
                                          content_type="text/plain")
        body = as_data(data).encode("utf-8")
        channels = [channel] if isinstance(channel, str) else list(channel)
        check(channels, event)
        try:
            amqp = self._open()
            for name in channels:
                amqp.basic_publish(self.exchange, name, body, properties)
        except pika.exceptions.AMQPError as exc:
            self.channel = None
            raise Unavailable(f"AMQP: not confirmed: {exc!r}") from exc

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.close()
