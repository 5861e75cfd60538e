"""A Redis connection kept open with backoff, for the Redis broker and history.

txredisapi speaks the protocol; this module only decides where to connect (host/port,
``redis://`` URL, password, database, TLS) and reconnects through Twisted's
``ClientService``, telling its owner when the link comes up and goes down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS

from cyclone_sse.errors import BrokerUnavailable
from cyclone_sse.reconnect import RETRY_POLICY, Outage, QuietClientService

#: Seconds a command waits for a link that is (re)connecting before giving up with 503.
READY_WAIT = 3.0


@dataclass
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> RedisAddress:
        address = cls(settings.redis_host, settings.redis_port, settings.redis_db,
                      settings.redis_password or None, None, settings.redis_tls)
        if settings.redis_url:
            address = cls.from_url(settings.redis_url, address)
        return address

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


class _Factory(Factory):
    """What txredisapi protocols expect of their factory, plus our protocol choice."""

    isLazy = True
    noisy = False

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        a = self.link.address
        # Replies stay bytes (charset=None) and numbers stay text: payloads are data.
        proto = self.link.protocol_class(charset=None, password=a.password, dbid=a.db or None,
                                         convertNumbers=False, username=a.username)
        proto.factory = self
        return proto

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        self.link.outage.report(why)


class RedisLink:
    """One connection to Redis, re-made with backoff whenever it drops."""

    def __init__(self, reactor: Any, address: RedisAddress, name: str,
                 protocol_class: type = txredisapi.RedisProtocol,
                 on_up: Callable[[Any], object] | None = None,
                 on_down: Callable[[], object] | None = None) -> None:
        self.reactor = reactor
        self.address = address
        self.name = name
        self.protocol_class = protocol_class
        self.on_up = on_up
        self.on_down = on_down
        self.connection: Any = None
        self.ready = False  # connected, and on_up (e.g. loading scripts) has finished
        self._waiting: list[defer.Deferred[None]] = []
        self.outage = Outage(f"redis {name} connection to {address}")
        self._stopping = False
        endpoint: Any = HostnameEndpoint(reactor, address.host, address.port, timeout=5)
        if address.tls:
            endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
        self.service = QuietClientService(endpoint, _Factory(self), clock=reactor,
                                          retryPolicy=RETRY_POLICY,
                                          prepareConnection=self._prepare)

    def _prepare(self, proto: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = proto.whenConnected()
        d.addCallback(self._up)
        return d

    def _up(self, proto: Any) -> Any:
        self.connection = proto
        proto.whenDisconnected().addCallback(self._down)
        d = defer.maybeDeferred(self.on_up, proto) if self.on_up is not None \
            else defer.succeed(None)
        d.addCallback(self._ready, proto)
        return d

    def _ready(self, _: object, proto: Any) -> Any:
        if self.connection is not proto:
            return proto
        self.outage.over()
        self.ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
        return proto

    def _down(self, proto: Any) -> None:
        if self.connection is proto:
            self.connection = None
            self.ready = False
            if self._stopping:
                return
            self.outage.lost()
            if self.on_down is not None:
                self.on_down()

    @property
    def outages(self) -> int:
        return self.outage.count

    @property
    def connected(self) -> bool:
        return self.ready

    def when_ready(self, timeout: float = READY_WAIT) -> defer.Deferred[None]:
        """Fires when the link is usable; fails with ``BrokerUnavailable`` after
        ``timeout`` seconds, so a caller never waits long on an outage."""
        if self.ready:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)

        def expire() -> None:
            if d in self._waiting:
                self._waiting.remove(d)
                d.errback(BrokerUnavailable(f"redis at {self.address} is unreachable"))

        call = self.reactor.callLater(timeout, expire)

        def disarm(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(disarm)
        return d

    def command(self, *args: Any) -> defer.Deferred[Any]:
        """Run one command, waiting up to ``READY_WAIT`` for a (re)connecting link."""
        if self.ready:
            return self.connection.execute_command(*args)
        d = self.when_ready()
        d.addCallback(lambda _: self.connection.execute_command(*args))
        return d

    def raw_command(self, *args: Any) -> defer.Deferred[Any]:
        """Run one command on the connection as it is (used while it comes up)."""
        if self.connection is None:
            return defer.fail(BrokerUnavailable(f"redis at {self.address} is unreachable"))
        return self.connection.execute_command(*args)

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> defer.Deferred[None]:
        self._stopping = True
        return defer.maybeDeferred(self.service.stopService)
