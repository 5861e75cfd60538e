"""What every kept-open link shares: one reconnect policy, one log line per outage, and
the up/ready/down life cycle as a Twisted service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cyclone_sse.errors import BrokerUnavailable

log = Logger()

#: Reconnection backoff: first retry after 0.2 s, growing to one every 5 s.
RETRY_POLICY = backoffPolicy(initialDelay=0.2, maxDelay=5.0)
#: Seconds a caller waits for a link that is (re)connecting before giving up with 503.
READY_WAIT = 3.0


@implementer(ILogObserver)
def _discard(event: dict[str, Any]) -> None:
    pass


class QuietClientService(ClientService):
    """ClientService logs every retry; an ``Outage`` logs each outage once instead."""

    _log = Logger(observer=_discard)


class Outage:
    """One warning when a link goes down, one line when it is up or back."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.ongoing = False
        self.why = ""

    def report(self, why: str) -> None:
        if not self.ongoing:
            self.why = why  # (what began it, for the refusals it causes)
            self.ongoing = True
            self.count += 1
            log.warn("{what}: {why}; reconnecting", what=self.what, why=why)

    def lost(self, why: str = "") -> None:
        self.report(f"connection lost ({why})" if why else "connection lost")

    def over(self) -> None:
        log.info("{what} is {state}", what=self.what, state="back" if self.ongoing else "up")
        self.ongoing = False


class Link(MultiService):
    """One connection kept open with backoff (a ``ClientService`` child).

    When a connection is made, ``on_up(connection)`` sets it up (subscribes, loads
    scripts...); once that is done the link is ``ready`` and callers waiting in
    ``when_ready`` go on.  The protocol calls ``lost(connection)`` when it goes away;
    ``on_down()`` then lets the owner forget per-connection state.
    """

    def __init__(self, clock: IReactorTime, what: str, endpoint: Any, factory: Any,
                 on_up: Callable[[Any], object] | None = None,
                 on_down: Callable[[], object] | None = None,
                 retry_policy: Callable[[int], float] | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.what = what
        self.on_up = on_up
        self.on_down = on_down
        self.connection: Any = None
        self.ready = False  # connected, and on_up has finished
        self.outage = Outage(what)
        self._waiting: list[defer.Deferred[None]] = []
        self._stopping = False
        QuietClientService(endpoint, factory, clock=clock,
                           retryPolicy=retry_policy or RETRY_POLICY,
                           prepareConnection=self._prepare).setServiceParent(self)

    # life cycle, driven by ClientService and the protocol ---------------------------

    def _prepare(self, connection: Any) -> None:
        # ClientService hands over a proxy that forwards attribute lookups to the
        # protocol; ``connection.protocol_itself()`` (defined by our protocol classes)
        # is how the link learns the protocol object that will later report ``lost``.
        # ClientService is not made to wait for the set-up: a connection lost while it
        # waits (a refused TLS handshake, say) is a state its machine does not expect
        # (automat NoTransition tracebacks).  The link knows when it is ready itself.
        self.set_up(connection.protocol_itself())

    def set_up(self, connection: Any) -> defer.Deferred[Any]:
        self.connection = connection
        d = defer.maybeDeferred(self.on_up, connection) if self.on_up is not None \
            else defer.succeed(None)
        d.addCallback(self._ready, connection)
        d.addErrback(self._setup_failed, connection)
        return d

    def _ready(self, _: object, connection: Any) -> Any:
        if self.connection is connection:
            self.outage.over()
            self.ready = True
            # Waiters go on in the next reactor turn: ClientService records the
            # connection only when this chain returns, and a waiter that stops the
            # service before then would leave the connection open behind it.
            self.clock.callLater(0, self._release_waiters)
        return connection

    def _release_waiters(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(None)

    def _setup_failed(self, failure: Failure, connection: Any) -> None:
        # (handled here: the reconnect that follows the close is ClientService's)
        if self.connection is connection and not self._stopping:
            self.outage.report(f"setup failed: {failure.getErrorMessage()}")
            connection.transport.loseConnection()

    def lost(self, connection: Any, why: str = "") -> None:
        """The protocol's connection is gone (called by the protocol, with the reason)."""
        if self.connection is connection:
            self.connection = None
            self.ready = False
            if not self._stopping:
                self.outage.lost(why)
                if self.on_down is not None:
                    self.on_down()

    def startService(self) -> None:
        self._stopping = False
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        self._stopping = True
        return defer.maybeDeferred(super().stopService)

    # for the owner --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.ready

    @property
    def outages(self) -> int:
        return self.outage.count

    def unavailable(self) -> BrokerUnavailable:
        reason = f" ({self.outage.why})" if self.outage.ongoing and self.outage.why else ""
        return BrokerUnavailable(f"{self.what} is unreachable{reason}")

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
                d.errback(self.unavailable())

        call = self.clock.callLater(timeout, expire)

        def disarm(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(disarm)
        return d
