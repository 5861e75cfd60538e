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
from twisted.application.internet import TimerService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

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
    """Where a Redis server is and how to log in: one server, or the primary that the
    Sentinels of ``sentinels`` name for ``master`` (``redis+sentinel://``)."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False
    files: ClientTls = field(default_factory=ClientTls)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    cluster: tuple[tuple[str, int], ...] = ()  # seed nodes of a Redis Cluster

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
        """``redis://[user:password@]host[:port][/db]``, or ``rediss://`` for TLS;
        ``redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]`` (or
        ``rediss+sentinel://``) for the primary the Sentinels name."""
        if url.startswith(("redis+sentinel://", "rediss+sentinel://")):
            return cls._from_sentinel_url(url, base or cls())
        if url.startswith(("redis+cluster://", "rediss+cluster://")):
            return cls._from_cluster_url(url, base or cls())
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"{url!r}: expected redis://, rediss://, redis+sentinel:// or "
                             "redis+cluster://")
        base = base or cls()
        db = parsed.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"{url!r}: the database must be a number")
        return cls(parsed.hostname or base.host, parsed.port or base.port,
                   int(db) if db else base.db,
                   unquote(parsed.password) if parsed.password else base.password,
                   unquote(parsed.username) if parsed.username else base.username,
                   parsed.scheme == "rediss" or base.tls)

    @staticmethod
    def _hosts(url: str, what: str) -> tuple[str, str, list[tuple[str, int]], str]:
        """``scheme://[[user]:password@]host:port[,host:port...][/path]`` in parts."""
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        credentials, at, hosts = netloc.rpartition("@")
        if not at:
            credentials, hosts = "", netloc
        found = []
        for item in hosts.split(","):
            host, colon, port = item.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{url!r}: each {what} is host:port (got {item!r})")
            found.append((host.strip("[]"), int(port)))
        return scheme, credentials, found, path

    @classmethod
    def _from_cluster_url(cls, url: str, base: RedisAddress) -> RedisAddress:
        scheme, credentials, nodes, path = cls._hosts(url, "Cluster node")
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"{url!r}: a Redis Cluster has database 0 only")
        user, _, password = credentials.partition(":")
        return cls(nodes[0][0], nodes[0][1], 0,
                   unquote(password) if password else base.password,
                   unquote(user) if user else base.username,
                   scheme == "rediss+cluster" or base.tls, cluster=tuple(nodes))

    @classmethod
    def _from_sentinel_url(cls, url: str, base: RedisAddress) -> RedisAddress:
        scheme, credentials, sentinels, path = cls._hosts(url, "Sentinel")
        user, _, password = credentials.partition(":")
        master, _, db = path.strip("/").partition("/")
        if not master:
            raise ValueError(f"{url!r}: name the master after the Sentinels "
                             "(redis+sentinel://host:port,.../MASTER)")
        if db and not db.isdigit():
            raise ValueError(f"{url!r}: the database must be a number")
        return cls(base.host, base.port, int(db) if db else base.db,
                   unquote(password) if password else base.password,
                   unquote(user) if user else base.username,
                   scheme == "rediss+sentinel" or base.tls, sentinels=tuple(sentinels),
                   master=unquote(master))

    def node(self, host: str, port: int) -> RedisAddress:
        """The same log-in and TLS, for one node of a Cluster."""
        return RedisAddress(host, port, 0, self.password, self.username, self.tls, self.files)

    def __str__(self) -> str:
        if self.cluster:
            hosts = ",".join(f"{h}:{p}" for h, p in self.cluster)
            return f"{'rediss' if self.tls else 'redis'}+cluster://{hosts}"
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return (f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/"
                    f"{self.master}/{self.db}")
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class _SentinelQuestion(Protocol):
    """Asks one Sentinel ``SENTINEL get-master-addr-by-name MASTER`` and reads the
    answer: an array of host and port, or a null array (no such master)."""

    def __init__(self, master: str, answered: defer.Deferred[tuple[str, int] | None]) -> None:
        self.master = master
        self.answered = answered
        self.buffer = b""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(encode_command("SENTINEL", "get-master-addr-by-name", self.master))

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer.startswith((b"*-1\r\n", b"-")):
            self._answer(None)
            return
        parts = self.buffer.split(b"\r\n")
        # *2 $len host $len port (and the empty rest after the last CRLF)
        if len(parts) >= 6 and parts[0] == b"*2":
            try:
                self._answer((parts[2].decode("ascii"), int(parts[4])))
            except ValueError:
                self._answer(None)
        elif len(self.buffer) > 1024:
            self._answer(None)

    def _answer(self, result: tuple[str, int] | None) -> None:
        if not self.answered.called:
            self.answered.callback(result)
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.answered.called:
            self.answered.callback(None)


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the primary the Sentinels name now: each connection (and each
    reconnection) asks them in turn, the first that knows the master answering, then
    connects there.  Sentinels are asked without a password; the primary's own comes
    from the URL."""

    def __init__(self, reactor: Any, address: RedisAddress, timeout: float) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout

    @defer.inlineCallbacks
    def connect(self, factory: Any) -> Any:
        primary = None
        for host, port in self.address.sentinels:
            answered: defer.Deferred[tuple[str, int] | None] = defer.Deferred()
            answered.addTimeout(self.timeout, self.reactor, onTimeoutCancel=lambda *_: None)
            asking = HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)
            try:
                question = yield asking.connect(_OneQuestion(self.address.master, answered))
            except Exception:  # (that Sentinel is down: ask the next)
                continue
            primary = yield answered
            if question.transport is not None:
                question.transport.loseConnection()  # (answered, or silent too long)
            if primary is not None:
                break
        if primary is None:
            raise ConnectionRefusedError(
                f"no Sentinel named a primary for {self.address.master!r}")
        endpoint: Any = HostnameEndpoint(self.reactor, primary[0], primary[1],
                                         timeout=self.timeout)
        if self.address.tls:
            endpoint = wrapClientTLS(self.address.files.options(primary[0]), endpoint)
        self.primary = primary
        connected = yield endpoint.connect(factory)
        return connected


@implementer(IStreamClientEndpoint)
class SeedEndpoint:
    """Connects to the first of a Cluster's seed nodes that answers (each connection
    and each reconnection tries them in order): a seed that died is passed over."""

    def __init__(self, reactor: Any, address: RedisAddress, timeout: float) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout

    @defer.inlineCallbacks
    def connect(self, factory: Any) -> Any:
        error: Exception = ConnectionRefusedError("no Cluster node given")
        for host, port in self.address.cluster:
            endpoint: Any = HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)
            if self.address.tls:
                endpoint = wrapClientTLS(self.address.files.options(host), endpoint)
            try:
                connected = yield endpoint.connect(factory)
            except Exception as exc:
                error = exc
                continue
            return connected
        raise error


class _OneQuestion(Factory):
    noisy = False

    def __init__(self, master: str, answered: defer.Deferred[tuple[str, int] | None]) -> None:
        self.master = master
        self.answered = answered

    def buildProtocol(self, addr: Any) -> _SentinelQuestion:
        return _SentinelQuestion(self.master, self.answered)


#: Reconnection behind Sentinel: the new primary is usually known within a second of
#: the failover, so retries stay frequent (at most one a second).
SENTINEL_RETRY_POLICY = backoffPolicy(initialDelay=0.1, maxDelay=1.0)


class NotPrimary(Exception):
    """A server reached through Sentinel is not (or no longer) the primary."""


def _check_primary(role: Any, connection: Any) -> Any:
    """Fail, and drop ``connection``, unless ``ROLE`` says it is the primary."""
    kind = role[0] if isinstance(role, list) and role else role
    if kind != b"master":
        connection.transport.loseConnection()
        raise NotPrimary(f"the server is a {kind!r}, not the primary: asking the Sentinels "
                         "again")
    return role


def _readonly(reply: Any) -> bool:
    """A write refused by a replica: the primary moved (a failover)."""
    return isinstance(reply, txredisapi.ResponseError) and str(reply).startswith("READONLY")


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

    def replyReceived(self, reply: Any) -> None:
        if _readonly(reply) and self.transport is not None:
            # this server was the primary and is a replica now: drop the connection, so
            # the link asks the Sentinels (or the address) where to write again
            self.transport.loseConnection()
        super().replyReceived(reply)

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

    def replyReceived(self, reply: Any) -> None:
        # Sharded pub/sub (Redis 7), which txredisapi does not know: a message comes as
        # ``smessage``; ``sunsubscribe`` unasked means the slot moved to another node.
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"smessage":
                self.factory.on_message(None, reply[1], reply[2])
                return
            if kind in (b"ssubscribe", b"sunsubscribe") and not self.replyQueue.waiting:
                if kind == b"sunsubscribe":
                    self.factory.on_unsubscribed(reply[1])
                return
        super().replyReceived(reply)

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
        # a shard channel Redis unsubscribed on its own (its slot moved elsewhere)
        self.on_unsubscribed: Callable[[bytes], object] = lambda _: None
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
        endpoint: Any
        if address.sentinels:
            endpoint = SentinelEndpoint(reactor, address, timeout or 5)
        elif address.cluster:
            endpoint = SeedEndpoint(reactor, address, timeout or 5)
        else:
            endpoint = HostnameEndpoint(reactor, address.host, address.port,
                                        timeout=timeout or 5)
            if address.tls:
                endpoint = wrapClientTLS(address.tls_options(), endpoint)
        factory = _Factory(address, on_message, reactor, timeout)
        # Behind Sentinel the primary may be elsewhere at the next try: ask again soon.
        super().__init__(reactor, f"redis {name} connection to {address}", endpoint, factory,
                         self._proven(on_up, bool(address.sentinels)), on_down,
                         retry_policy=SENTINEL_RETRY_POLICY if address.sentinels else None)
        self.pubsub = on_message is not None
        self.factory = factory
        factory.link = self
        if timeout:  # a PING now and then: a Redis that froze is noticed even when idle
            heartbeat = TimerService(timeout, self._ping)
            heartbeat.clock = reactor
            heartbeat.setServiceParent(self)

    def _ping(self) -> None:
        if not self.ready or self.connection is None:
            return
        if self.address.sentinels and not self.pubsub:
            # a primary that was demoted (a planned failover) keeps its connections
            # open and refuses every write: noticed here within --redis-timeout
            connection = self.connection
            connection.execute_command("ROLE").addCallbacks(
                lambda role: _check_primary(role, connection), lambda _: None)
            return
        self.connection.execute_command("PING").addErrback(lambda _: None)

    def _prepare(self, connection: Any) -> None:
        # txredisapi's whenConnected fires with the protocol itself (not ClientService's
        # proxy) once AUTH and SELECT are done.  (Not returned: see Link._prepare.)
        connection.whenConnected().addCallback(self.set_up)

    @staticmethod
    def _proven(on_up: Callable[[Any], object] | None,
                primary: bool = False) -> Callable[[Any], object]:
        """Set-up that starts with a PING: only a reply proves the connection (TLS
        can still fail after txredisapi calls a connection made).  Behind Sentinel it
        is ``ROLE``, and a server that is not the primary (a Sentinel not yet up to
        date) is left for the next try."""
        def up(connection: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any]
            if primary:
                d = connection.execute_command("ROLE")
                d.addCallback(_check_primary, connection)
            else:
                d = connection.execute_command("PING")
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

