"""AMQP 0-9-1 plumbing over txamqp: where the spec is, one kept-open connection.

The only module that imports txamqp.  txamqp needs the protocol's XML spec but ships
none; Debian's ``amqp-specs`` package has it (``apt-get install amqp-specs``), or
``--amqp-spec=FILE`` names one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from txamqp import connection as _connection
from txamqp.client import TwistedDelegate
from txamqp.content import Content
from txamqp.endpoint import AMQEndpoint
from txamqp.factory import AMQFactory
from txamqp.protocol import AMQClient
from txamqp.queue import Closed

from cyclone_sse.links.reconnect import Link

#: Where the 0-9-1 spec is looked for when --amqp-spec is not given.
SPEC_CANDIDATES = (
    "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml",
    "/usr/share/amqp/specs/0-9-1/amqp0-9-1.stripped.xml",
)
#: Seconds between AMQP heartbeats: a dead broker is noticed within about 3 of them.
HEARTBEAT = 10

# txamqp 0.8.2 decodes a body frame to ``str`` whenever the bytes happen to be UTF-8;
# a multi-byte body then looks shorter than its header says and the message never
# completes.  A body is bytes: read it as bytes.
_connection.Body.decode = staticmethod(  # type: ignore[method-assign]
    lambda spec, dec: _connection.Body(dec.decode_longbytes()))


def find_spec(path: str | None = None) -> str:
    """The spec file to use, or ``FileNotFoundError`` saying how to get one."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--amqp-spec={path}: no such file")
        return path
    for candidate in SPEC_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError("no AMQP 0-9-1 spec found: install Debian's amqp-specs "
                            "package or pass --amqp-spec=FILE")


class _Client(AMQClient):
    """Tells its link when the connection is gone."""

    link: AmqpLink

    def protocol_itself(self) -> _Client:
        return self

    def connectionLost(self, reason: Any) -> None:
        self.link.lost(self, reason.getErrorMessage())
        super().connectionLost(reason)


class _Factory(AMQFactory):
    protocol = _Client
    noisy = False

    def __init__(self, clock: IReactorTime, spec: str) -> None:
        super().__init__(spec=spec, clock=clock)
        self.link: AmqpLink

    def buildProtocol(self, addr: Any) -> Any:
        proto = _Client(TwistedDelegate(), vhost=self._vhost, spec=self._spec,
                        heartbeat=self._heartbeat, clock=self._clock)
        proto.link = self.link
        return proto


class AmqpLink(Link):
    """One AMQP connection, re-made with backoff; ``on_up(client)`` sets it up."""

    def __init__(self, reactor: IReactorTime, host: str, port: int, vhost: str,
                 username: str, password: str, spec: str,
                 on_up: Callable[[Any], object], on_down: Callable[[], object]) -> None:
        self.address = f"amqp://{host}:{port}{vhost if vhost.startswith('/') else '/' + vhost}"
        endpoint = AMQEndpoint(reactor, host, port, username=username, password=password,
                               vhost=vhost, heartbeat=HEARTBEAT, timeout=5)
        factory = _Factory(reactor, spec)
        super().__init__(reactor, f"amqp connection to {self.address}", endpoint, factory,
                         on_up, on_down)
        factory.link = self

    @staticmethod
    @defer.inlineCallbacks
    def consume(queue: Any, on_message: Callable[[Any], object]) -> Any:
        """Hand every message of a txamqp consumer queue to ``on_message`` until the
        connection closes it."""
        while True:
            try:
                message = yield queue.get()
            except Closed:
                return
            on_message(message)


def make_content(data: str | bytes, name: str | None = None,
                 publisher_id: str | None = None,
                 headers: dict[str, str] | None = None) -> Content:
    content = Content(data.encode("utf-8") if isinstance(data, str) else data)
    if name:
        content["type"] = name
    if publisher_id:
        content["message-id"] = publisher_id
    if headers:
        content["headers"] = headers
    return content


def publish_once(host: str, port: int, vhost: str, username: str, password: str,
                 exchange: str, routing_key: str, data: str | bytes, name: str | None = None,
                 spec: str | None = None) -> None:
    """Connect, publish one message, disconnect (for ``extras/publisher.py amqp``)."""
    from twisted.internet import task

    @defer.inlineCallbacks
    def run(reactor: Any) -> Any:
        endpoint = AMQEndpoint(reactor, host, port, username=username, password=password,
                               vhost=vhost, timeout=5)
        client = yield endpoint.connect(AMQFactory(spec=find_spec(spec), clock=reactor))
        channel = yield client.channel(1)
        yield channel.channel_open()
        channel.basic_publish(exchange=exchange, routing_key=routing_key,
                              content=make_content(data, name))
        yield channel.channel_close()
        yield client.close()

    task.react(run)
