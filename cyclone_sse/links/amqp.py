"""AMQP 0-9-1 plumbing over txamqp: where the spec is, one kept-open connection.

The only module that imports txamqp.  txamqp needs the protocol's XML spec but ships
none; Debian's ``amqp-specs`` package has it (``apt-get install amqp-specs``), or
``--amqp-spec=FILE`` names one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from txamqp import connection as _connection
from txamqp.client import TwistedDelegate
from txamqp.content import Content
from txamqp.factory import AMQFactory
from txamqp.protocol import AMQClient

from cyclone_sse.links.amqp_wire import DeliveryReader
from cyclone_sse.links.reconnect import Link
from cyclone_sse.links.tls import ClientTls
from cyclone_sse.sockets import direct_socket, write_now

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


@dataclass
class AmqpAddress:
    """Where a RabbitMQ (AMQP 0-9-1) server is and how to log in."""

    host: str = "127.0.0.1"
    port: int = 5672
    vhost: str = "/"
    username: str = "guest"
    password: str = "guest"
    tls: bool = False
    files: ClientTls = field(default_factory=ClientTls)

    @classmethod
    def from_settings(cls, settings: Any) -> AmqpAddress:
        """From the ``--amqp-*`` options; ``--amqp-url`` wins over the others."""
        address = cls(settings.amqp_host, settings.amqp_port, settings.amqp_vhost,
                      settings.amqp_username, settings.amqp_password, settings.amqp_tls)
        if settings.amqp_url:
            address = cls.from_url(settings.amqp_url, address)
        elif address.tls and address.port == 5672:
            address.port = 5671  # AMQP's TLS port
        address.files = ClientTls.from_settings(settings, "amqp")
        return address

    @classmethod
    def from_url(cls, url: str, base: AmqpAddress | None = None) -> AmqpAddress:
        """``amqp://[user:password@]host[:port][/vhost]`` (the vhost URL-encoded:
        ``%2F`` is ``/``), or ``amqps://`` for TLS (port 5671)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("amqp", "amqps"):
            raise ValueError(f"{url!r}: expected amqp:// or amqps://")
        base = base or cls()
        tls = parsed.scheme == "amqps"
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number") from None
        vhost = unquote(parsed.path[1:]) if len(parsed.path) > 1 else base.vhost
        return cls(parsed.hostname or base.host, port or (5671 if tls else 5672), vhost,
                   unquote(parsed.username) if parsed.username else base.username,
                   unquote(parsed.password) if parsed.password else base.password, tls)

    def tls_options(self) -> Any:
        return self.files.options(self.host)

    def endpoint(self, reactor: Any, timeout: float = 5) -> Any:
        """A TCP (or TLS) client endpoint to the server."""
        endpoint: Any = HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        return wrapClientTLS(self.tls_options(), endpoint) if self.tls else endpoint

    def __str__(self) -> str:
        vhost = self.vhost if self.vhost.startswith("/") else "/" + self.vhost
        return f"{'amqps' if self.tls else 'amqp'}://{self.host}:{self.port}{vhost}"


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


#: What ``_Client._unpack_frame`` gives for a frame a ``DeliveryReader`` took.
_TAKEN = object()


class _Client(AMQClient):
    """Tells its link when the connection is gone; reads deliveries and writes publishes
    through ``amqp_wire`` instead of txamqp's codec (``reader``, ``send_now``)."""

    link: AmqpLink
    reader: DeliveryReader | None = None
    socket: Any = None
    _last_taken = 0.0  # when the reader last took a frame (for the heartbeat check)
    _closed_why = ""  # why this connection is dropped, when the server closed a channel

    def protocol_itself(self) -> _Client:
        return self

    def connectionMade(self) -> None:
        super().connectionMade()
        self.socket = direct_socket(self.transport)

    # txamqp's FrameReceiver.dataReceived cuts whole frames and passes each through
    # _unpack_frame (its spec-driven decoder), then frame_received: both private,
    # overridden here so the reader sees a frame before any decoding
    # (tests/test_quality.py checks they are still called so).
    def _unpack_frame(self, data: bytes) -> Any:
        reader = self.reader
        if reader is not None and reader.take(data):
            self._last_taken = self.clock.seconds()
            return _TAKEN
        return super()._unpack_frame(data)

    def frame_received(self, frame: Any) -> Any:
        if frame is _TAKEN:
            return None
        return super().frame_received(frame)

    def check_heartbeat(self) -> None:
        """txamqp's check (abort after 3 silent heartbeat intervals), which counts the
        frames the reader took as traffic: txamqp reschedules it only for its own."""
        window = self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT
        quiet = self.clock.seconds() - self._last_taken
        if quiet < window:
            self.checkHB = self.clock.callLater(window - quiet, self.check_heartbeat)
            return
        super().check_heartbeat()

    def send_now(self, data: bytes) -> None:
        """Write frames built by ``amqp_wire``, in order with txamqp's own (which
        txamqp writes to the transport as soon as they are made)."""
        write_now(self.transport, self.socket, data)

    def connectionLost(self, reason: Any) -> None:
        self.link.lost(self, self._closed_why or reason.getErrorMessage())
        super().connectionLost(reason)

    def channel_failed(self, channel: Any, reason: Any) -> None:
        """The server closed a channel (an exchange deleted, a declare refused): the
        connection is dropped, so the link makes it anew and sets everything up again
        (txamqp would leave the channel dead and the connection up)."""
        message = getattr(reason, "value", reason)
        self._closed_why = (f"the server closed channel {channel.id}: "
                            f"{getattr(message, 'reply_text', message)}")
        self.transport.abortConnection()


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

    def __init__(self, reactor: IReactorTime, address: AmqpAddress, spec: str,
                 on_up: Callable[[Any], object], on_down: Callable[[], object]) -> None:
        self.address = address
        factory = _Factory(reactor, spec)
        factory.set_vhost(address.vhost)
        factory.set_heartbeat(HEARTBEAT)
        # Logging in is part of the set-up, not of connecting (as txamqp's AMQEndpoint
        # does): a TLS handshake refused meanwhile is then an ordinary lost connection.
        super().__init__(reactor, f"amqp connection to {address}",
                         address.endpoint(reactor), factory, self._logged_in(on_up), on_down)
        factory.link = self

    def _logged_in(self, on_up: Callable[[Any], object]) -> Callable[[Any], object]:
        @defer.inlineCallbacks
        def up(client: Any) -> Any:
            yield client.authenticate(self.address.username, self.address.password)
            yield on_up(client)
        return up


def make_content(data: str | bytes, name: str | None = None,
                 publisher_id: str | None = None,
                 headers: dict[str, str] | None = None) -> Content:
    """txamqp content for ``basic_publish`` (strings as UTF-8 bytes: txamqp measures a
    ``str`` in characters, which breaks the frame of a non-ASCII one)."""
    content = Content(data.encode("utf-8") if isinstance(data, str) else data)
    if name:
        content["type"] = name.encode("utf-8")
    if publisher_id:
        content["message-id"] = publisher_id.encode("utf-8")
    if headers:
        content["headers"] = headers
    return content


def publish_once(address: AmqpAddress, exchange: str, routing_key: str, data: str | bytes,
                 name: str | None = None, spec: str | None = None) -> None:
    """Connect, publish one message, disconnect (for ``extras/publisher.py amqp``)."""
    from twisted.internet import task

    @defer.inlineCallbacks
    def run(reactor: Any) -> Any:
        factory = AMQFactory(spec=find_spec(spec), clock=reactor)
        factory.set_vhost(address.vhost)
        client = yield address.endpoint(reactor).connect(factory)
        yield client.authenticate(address.username, address.password)
        channel = yield client.channel(1)
        yield channel.channel_open()
        channel.basic_publish(exchange=exchange, routing_key=routing_key,
                              content=make_content(data, name))
        yield channel.channel_close()
        yield client.close()

    task.react(run)
