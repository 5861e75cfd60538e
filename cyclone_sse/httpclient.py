"""The HTTP client the daemon asks applications with (the auth callback, GRIP
backends): one quiet connection pool per user, an answer's head and body read up to a
bound, and no connection left open once a question is cancelled (a timeout)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web import _newclient
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss


class AnswerTooLarge(Exception):
    """An application's answer over its bound: ``part`` is ``"head"`` (the status line
    and headers) or ``"body"``."""

    def __init__(self, part: str, limit: int) -> None:
        what = "header block" if part == "head" else "body"
        super().__init__(f"its {what} is larger than {limit} bytes")
        self.part = part


class _BoundedHeadProtocol(_newclient.HTTP11ClientProtocol):
    """Twisted's client protocol, with the status line and headers of each answer
    bounded: past ``max_head`` bytes the connection is given up and the question fails
    with ``AnswerTooLarge`` (Twisted bounds each line, not how many there are)."""

    def __init__(self, quiescent: Any, max_head: int) -> None:
        super().__init__(quiescent)
        self.max_head = max_head
        self._counted: Any = None  # the parser whose head is being counted
        self._head = 0

    def request(self, request: Any) -> defer.Deferred[Any]:
        answered = super().request(request)
        parser = self._parser
        if parser is not None:  # (None: the request failed at once)
            complete = parser.allHeadersReceived

            def all_headers_received() -> None:
                _drop_listed(parser.connHeaders, parser.headers)
                complete()

            parser.allHeadersReceived = all_headers_received  # type: ignore[method-assign]
        return answered

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # ``_parser`` is the answer being read; its ``state`` is still STATUS or HEADER
        # while the head comes in; ``_giveUp`` is how Twisted ends a connection that
        # broke the protocol (tests/test_quality.py checks all three).
        parser = self._parser
        if parser is None or parser.state not in (_newclient.STATUS, _newclient.HEADER):
            return
        if parser is not self._counted:
            self._counted, self._head = parser, 0
        self._head += len(data)
        if self._head > self.max_head:
            self._giveUp(Failure(AnswerTooLarge("head", self.max_head)))


def _drop_listed(connection_headers: Any, headers: Any) -> None:
    """Remove from an answer's headers those its ``Connection`` header lists: they are
    hop-by-hop (RFC 9110 7.6.1).  (Twisted keeps ``Connection`` itself apart, in the
    parser's ``connHeaders``, where no user of the answer sees it.)"""
    for value in connection_headers.getRawHeaders(b"connection", ()):
        for name in value.split(b","):
            if name.strip():
                headers.removeHeader(name.strip())


class _QuietFactory(Factory):
    """Builds the pool's connections without a "Starting factory" line for each."""

    noisy = False

    def __init__(self, quiescent: Any, metadata: Any, max_head: int) -> None:
        self.quiescent = quiescent
        self.metadata = metadata
        self.max_head = max_head

    def buildProtocol(self, addr: Any) -> _BoundedHeadProtocol:
        return _BoundedHeadProtocol(self.quiescent, self.max_head)


def quiet_pool(reactor: Any, max_head: int) -> HTTPConnectionPool:
    """A persistent connection pool whose answers' heads are bounded."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    # The pool builds each connection's factory from this private class attribute,
    # called with (quiescent callback, metadata) (tests/test_quality.py checks it).
    pool._factory = lambda quiescent, metadata: _QuietFactory(  # type: ignore[assignment,return-value]
        quiescent, metadata, max_head)
    return pool


def agent(reactor: Any, max_head: int, connect_timeout: float | None = None) -> Agent:
    """An ``Agent`` over a ``quiet_pool``."""
    return Agent(reactor, connectTimeout=connect_timeout, pool=quiet_pool(reactor, max_head))


def failure_reason(failure: Failure) -> Failure:
    """The failure under Twisted's ``ResponseFailed``/``ResponseNeverReceived`` wrapper
    (where ``AnswerTooLarge`` ends up), or ``failure`` itself."""
    for reason in getattr(failure.value, "reasons", ()):
        if reason.check(AnswerTooLarge):
            return reason  # type: ignore[no-any-return]
    return failure


class _BoundedBody(Protocol):
    """An answer's body, up to ``limit`` bytes."""

    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                self.done.errback(AnswerTooLarge("body", self.limit))
            self.stop()
            return
        self.parts.append(data)

    def stop(self) -> None:
        """Stop the transfer: the connection is closed, never returned to the pool."""
        transport: Any = self.transport  # (a producer: Twisted's TransportProxyProducer)
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return  # (refused as too large, or cancelled: already answered)
        # an HTTP/1.0 server that ends the body by closing counts as complete
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def read_body(response: Any, limit: int) -> defer.Deferred[bytes]:
    """The whole body of ``response``, at most ``limit`` bytes (``AnswerTooLarge``
    past it).  Cancelling the Deferred (a timeout) closes the connection, so an
    application that stalls mid-body holds nothing open."""
    body: _BoundedBody
    done: defer.Deferred[bytes] = defer.Deferred(lambda _: body.stop())
    body = _BoundedBody(limit, done)
    response.deliverBody(body)
    return done
