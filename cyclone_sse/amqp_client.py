"""AMQP 0-9-1 plumbing over txamqp: where the spec is, one kept-open connection.

txamqp needs the protocol's XML spec but ships none; Debian's ``amqp-specs`` package
has it (``apt-get install amqp-specs``), or ``--amqp-spec=FILE`` names one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from txamqp import connection as _connection
from txamqp.client import TwistedDelegate
from txamqp.content import Content
from txamqp.endpoint import AMQEndpoint
from txamqp.factory import AMQFactory
from txamqp.protocol import AMQClient

from cyclone_sse.errors import BrokerUnavailable
from cyclone_sse.reconnect import RETRY_POLICY, Outage, QuietClientService

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

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.link.down(self)


class _Factory(AMQFactory):
    protocol = _Client
    noisy = False

    def __init__(self, link: AmqpLink, spec: str) -> None:
        super().__init__(spec=spec, clock=link.reactor)
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        proto = _Client(TwistedDelegate(), vhost=self._vhost, spec=self._spec,
                        heartbeat=self._heartbeat, clock=self._clock)
        proto.link = self.link
        return proto


class AmqpLink:
    """One AMQP connection, re-made with backoff; ``on_up(client)`` sets it up."""

    def __init__(self, reactor: Any, host: str, port: int, vhost: str, username: str,
                 password: str, spec: str, on_up: Callable[[Any], object],
                 on_down: Callable[[], object]) -> None:
        self.reactor = reactor
        self.address = f"amqp://{host}:{port}{vhost if vhost.startswith('/') else '/' + vhost}"
        self.on_up = on_up
        self.on_down = on_down
        self.client: Any = None
        self.ready = False
        self.outage = Outage(f"amqp connection to {self.address}")
        self._stopping = False
        endpoint = AMQEndpoint(reactor, host, port, username=username, password=password,
                               vhost=vhost, heartbeat=HEARTBEAT, timeout=5)
        self.service = QuietClientService(endpoint, _Factory(self, spec), clock=reactor,
                                          retryPolicy=RETRY_POLICY,
                                          prepareConnection=self._prepare)

    def _prepare(self, client: Any) -> defer.Deferred[Any]:
        self.client = client
        d = defer.maybeDeferred(self.on_up, client)
        d.addCallback(self._ready, client)
        d.addErrback(self._setup_failed, client)
        return d

    def _ready(self, _: object, client: Any) -> Any:
        if self.client is client:
            self.ready = True
            self.outage.over()
        return client

    def _setup_failed(self, failure: Any, client: Any) -> Any:
        self.outage.report(f"setup failed: {failure.getErrorMessage()}")
        client.transport.loseConnection()
        return failure

    def down(self, client: Any) -> None:
        # ClientService may hand prepareConnection a proxy around the protocol.
        if self.client is client or getattr(self.client, "_protocol", None) is client:
            self.client = None
            self.ready = False
            if not self._stopping:
                self.outage.lost()
                self.on_down()

    @property
    def outages(self) -> int:
        return self.outage.count

    def require(self) -> Any:
        if not self.ready:
            raise BrokerUnavailable(f"AMQP broker at {self.address} is unreachable")
        return self.client

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> defer.Deferred[None]:
        self._stopping = True
        return defer.maybeDeferred(self.service.stopService)


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
