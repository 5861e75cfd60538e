"""A Redis connection kept open with backoff, for the Redis history and broker.

The only module that imports txredisapi, which speaks the protocol; this module decides
where to connect (host/port, ``redis://`` URL, password, database, TLS) and hands
pub/sub messages to a callback.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import txredisapi
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from cyclone_sse.links.reconnect import Link
from cyclone_sse.links.tls import ClientTls
from cyclone_sse.sockets import direct_socket, write_now

MessageHandler = Callable[[bytes | None, bytes, bytes], None]  # (pattern, channel, message)
#: Seconds a Redis reply may take before the connection counts as lost (--redis-timeout).
DEFAULT_TIMEOUT = 3.0
#: What a command that got no reply in time fails with.
ReplyTimeout = txredisapi.TimeoutError


def encode_arguments(arguments: Iterable[bytes | str | int]) -> bytes:
    """Command arguments as RESP bulk strings (a command is ``*<count>`` and these)."""
    parts = []
    for argument in arguments:
        value = argument if isinstance(argument, bytes) else \
            argument.encode() if isinstance(argument, str) else b"%d" % argument
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def encode_command(*arguments: bytes | str | int) -> bytes:
    """One command in RESP, as Redis reads it: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(arguments), encode_arguments(arguments))


@dataclass
class RedisAddress:
    """Where a Redis server is and how to log in."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False
    files: ClientTls = field(default_factory=ClientTls)

    @classmethod
    def from_settings(cls, settings: Any) -> RedisAddress:
        """From the ``--redis-*`` options; ``--redis-url`` wins over the others."""
        address = cls(settings.redis_host, settings.redis_port, settings.redis_db,
                      settings.redis_password or None, None, settings.redis_tls)
        if settings.redis_url:
            address = cls.from_url(settings.redis_url, address)
        address.files = ClientTls.from_settings(settings, "redis")
        return address

    def tls_options(self) -> Any:
        """Client TLS: the server's name is checked against ``host``; the CA file, when
        given, is what is trusted."""
        return self.files.options(self.host)

    @classmethod
    def from_url(cls, url: str, base: RedisAddress | None = None) -> RedisAddress:
        """``redis://[user:password@]host[:port][/db]``, or ``rediss://`` for TLS."""
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"{url!r}: expected redis:// or rediss://")
        base = base or cls()
        db = parsed.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"{url!r}: the database must be a number")
        return cls(parsed.hostname or base.host, parsed.port or base.port,
                   int(db) if db else base.db,
                   unquote(parsed.password) if parsed.password else base.password,
                   unquote(parsed.username) if parsed.username else base.username,
                   parsed.scheme == "rediss" or base.tls)

    def __str__(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class _Unconverted:
    """txredisapi's reply conversion, for our settings (``charset=None``,
    ``convertNumbers=False``): it changes nothing, so it is not run over every reply
    (tests/test_quality.py checks it still changes nothing)."""

    @staticmethod
    def tryConvertData(data: Any) -> Any:
        return data


class _Commands(_Unconverted, txredisapi.RedisProtocol):
    """A command connection that tells its link when it is gone, and sends commands
    already encoded (``send_encoded``) without txredisapi's per-command cost."""

    factory: _Factory
    socket: Any = None  # (for write_now)
    _watchdog: Any = None  # the timer of the oldest reply awaited by send_encoded

    def connectionMade(self) -> Any:
        self.socket = direct_socket(self.transport)
        self._sent: deque[float] = deque()  # when each send_encoded command went out
        return super().connectionMade()

    def send_encoded(self, command: bytes) -> defer.Deferred[Any]:
        """Send ``command`` (RESP, from ``encode_command``): straight to the socket when
        it can be, without txredisapi's argument encoding, its three Deferreds per
        command and its timer per command.  Replies come in order through txredisapi's
        own queue (``replyQueue``, shared with its commands); one timer per connection
        (``_check_replies``) aborts it when the oldest reply is later than the timeout,
        as txredisapi would."""
        if not self.connected:
            return defer.fail(txredisapi.ConnectionError("Not connected"))
        write_now(self.transport, self.socket, command)
        if self.replyTimeout:
            self._sent.append(self.factory.clock.seconds())
            if self._watchdog is None:
                self._watchdog = self.callLater(self.replyTimeout, self._check_replies)
        d: defer.Deferred[Any] = self.replyQueue.get()
        d.addCallback(self._encoded_reply)
        return d

    def _encoded_reply(self, reply: Any) -> Any:
        if self._sent:
            self._sent.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _check_replies(self) -> None:
        self._watchdog = None
        if not self._sent or not self.connected:
            return
        left = self._sent[0] + self.replyTimeout - self.factory.clock.seconds()
        if left > 0:
            self._watchdog = self.callLater(left, self._check_replies)
            return
        # what txredisapi's own timeout does: every waiting reply fails, the
        # connection is aborted (and re-made by the link)
        error = ReplyTimeout(f"Not received Redis response in {self.replyTimeout} seconds")
        while self.replyQueue.waiting:
            self.replyQueue.put(error)
        self.transport.abortConnection()

    def connectionLost(self, why: Any) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        # the link first, with the reason (a refused certificate, say): then the
        # replies failing below are no news to it
        self.factory.link.lost(self, why.getErrorMessage())
        super().connectionLost(why)


class _Subscriber(_Unconverted, txredisapi.SubscriberProtocol):
    """A pub/sub connection: messages go to the link's ``on_message``."""

    factory: _Factory

    def messageReceived(self, pattern: bytes | None, channel: bytes, message: bytes) -> None:
        self.factory.on_message(pattern, channel, message)

    def connectionLost(self, why: Any) -> None:
        self.factory.link.lost(self, why.getErrorMessage())
        super().connectionLost(why)


class _Factory(Factory):
    """What txredisapi protocols expect of their factory, plus our protocol choice."""

    isLazy = True
    noisy = False

    def __init__(self, address: RedisAddress, on_message: MessageHandler | None,
                 clock: IReactorTime, timeout: float) -> None:
        self.address = address
        self.clock = clock
        self.timeout = timeout
        self.pubsub = on_message is not None
        self.on_message: MessageHandler = on_message or (lambda *_: None)
        self.link: RedisLink

    def buildProtocol(self, addr: Any) -> Any:
        a = self.address
        kind = _Subscriber if self.pubsub else _Commands
        # Replies stay bytes (charset=None) and numbers stay text: payloads are data.
        # A reply that takes longer than the timeout aborts the connection (txredisapi),
        # so a frozen Redis is an outage, not a hang.  (SUBSCRIBE commands are exempt
        # there: the link's PINGs stand in for them.)
        proto = kind(charset=None, password=a.password, dbid=a.db or None,
                     convertNumbers=False, username=a.username,
                     replyTimeout=self.timeout or None)
        # txredisapi schedules with the global reactor unless told otherwise.
        proto.callLater = self.clock.callLater
        proto.factory = self
        return proto

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        self.link.outage.report(why)


class RedisLink(Link):
    """One connection to Redis, re-made with backoff whenever it drops.

    With ``on_message`` it is a pub/sub connection (``connection.subscribe`` and
    friends, messages to the callback); without, a command connection.
    """

    def __init__(self, reactor: IReactorTime, address: RedisAddress, name: str,
                 on_up: Callable[[Any], object] | None = None,
                 on_down: Callable[[], object] | None = None,
                 on_message: MessageHandler | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        endpoint: Any = HostnameEndpoint(reactor, address.host, address.port,
                                         timeout=timeout or 5)
        if address.tls:
            endpoint = wrapClientTLS(address.tls_options(), endpoint)
        factory = _Factory(address, on_message, reactor, timeout)
        super().__init__(reactor, f"redis {name} connection to {address}", endpoint, factory,
                         self._proven(on_up), on_down)
        factory.link = self
        if timeout:  # a PING now and then: a Redis that froze is noticed even when idle
            heartbeat = TimerService(timeout, self._ping)
            heartbeat.clock = reactor
            heartbeat.setServiceParent(self)

    def _ping(self) -> None:
        if self.ready and self.connection is not None:
            self.connection.execute_command("PING").addErrback(lambda _: None)

    def _prepare(self, connection: Any) -> None:
        # txredisapi's whenConnected fires with the protocol itself (not ClientService's
        # proxy) once AUTH and SELECT are done.  (Not returned: see Link._prepare.)
        connection.whenConnected().addCallback(self.set_up)

    @staticmethod
    def _proven(on_up: Callable[[Any], object] | None) -> Callable[[Any], object]:
        """Set-up that starts with a PING: only a reply proves the connection (TLS
        can still fail after txredisapi calls a connection made)."""
        def up(connection: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = connection.execute_command("PING")
            if on_up is not None:
                d.addCallback(lambda _: on_up(connection))
            return d
        return up

    def command(self, *args: Any) -> defer.Deferred[Any]:
        """Run one command, waiting up to ``READY_WAIT`` for a (re)connecting link."""
        if self.ready:
            return self.connection.execute_command(*args)
        d = self.when_ready()
        d.addCallback(lambda _: self.connection.execute_command(*args))
        return d

    def send(self, command: bytes) -> defer.Deferred[Any]:
        """Run one encoded command (``encode_command``), waiting as ``command`` does."""
        if self.ready:
            return self.connection.send_encoded(command)  # type: ignore[no-any-return]
        d = self.when_ready()
        d.addCallback(lambda _: self.connection.send_encoded(command))
        return d

    def raw_command(self, *args: Any) -> defer.Deferred[Any]:
        """Run one command on the connection as it is (used while it comes up)."""
        if self.connection is None:
            return defer.fail(self.unavailable())
        return self.connection.execute_command(*args)

