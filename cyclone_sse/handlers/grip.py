"""GRIP proxy mode (``--grip-proxy``): requests under a route prefix are forwarded to the
application's backend, signed with ``Grip-Sig``; a plain answer is passed back, and an
answer with ``Grip-Hold`` holds the client — as a stream written with what is published
to its ``Grip-Channel`` channels, or as a response answered by the first such publish or
at ``Grip-Timeout`` with the backend's own answer."""

from __future__ import annotations

import secrets
from http.client import responses
from io import BytesIO
from typing import Any

import cyclone.web
from twisted.internet import defer
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from cyclone_sse import httpclient
from cyclone_sse.errors import BadGateway, BadRequest
from cyclone_sse.grip import (
    HOP_BY_HOP,
    GripError,
    Hold,
    checked_status,
    has_dot_segments,
    hop_by_hop,
    read_channels,
    read_hold,
    read_next_link,
    signature,
)
from cyclone_sse.handlers.base import BaseHandler
from cyclone_sse.http.response import default_headers, http_date
from cyclone_sse.transports.grip import GripStreamSubscriber
from cyclone_sse.transports.grip_websocket import Backend, GripWebSocket, read_answer
from cyclone_sse.transports.poll import PollSubscriber
from cyclone_sse.transports.websocket import opening_lines
from cyclone_sse.websocket_events import CONTENT_TYPE, encode, message_prefix

#: Pages of a backend's answer followed through ``Grip-Link: <...>; rel=next``.
MAX_PAGES = 100


def _received(response: Any) -> dict[str, str]:
    """A backend answer's headers by lower-cased name (the last value of each)."""
    return {name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()}


#: Request headers WebSocket-over-HTTP sets itself (the client's are not passed on).
WEBSOCKET_SET = frozenset({"accept", "connection-id", "content-type", "content-length",
                           "sec-websocket-extensions", "sec-websocket-key",
                           "sec-websocket-version"})
#: Headers of the backend's answer to ``OPEN`` that are for the proxy, not the client.
WEBSOCKET_ANSWER = frozenset({"content-type", "content-length", "keep-alive-interval",
                              "sec-websocket-extensions", "sec-websocket-accept", "date",
                              "server"})


def _websocket_backend(app: Any, url: str, headers: Headers, cid: str) -> Backend:
    """How a GRIP-held WebSocket reaches its backend: each request a ``POST`` of
    ``application/websocket-events`` to the URL the client asked for, with its
    ``Connection-Id``, its ``Meta-*`` values and a fresh ``Grip-Sig``."""
    settings = app.settings_obj
    target = url.encode("utf-8")

    def post(body: bytes, meta: dict[str, str]) -> defer.Deferred[tuple[int, dict[str, str],
                                                                        bytes]]:
        sent = headers.copy()
        for name, value in (("Accept", CONTENT_TYPE), ("Content-Type", CONTENT_TYPE),
                            ("Connection-Id", cid), ("Sec-WebSocket-Extensions", "grip")):
            sent.setRawHeaders(name, [value])
        for name, value in meta.items():
            sent.setRawHeaders(f"Meta-{name}", [value])
        if settings.grip_key:
            sent.setRawHeaders("Grip-Sig", [signature(settings.grip_key)])
        d: defer.Deferred[Any] = _agent(app).request(b"POST", target, sent,
                                                     FileBodyProducer(BytesIO(body)))
        d.addCallback(lambda response: httpclient.read_body(
            response, settings.grip_max_answer).addCallback(
                lambda content: (response.code, _received(response), content)))
        d.addTimeout(settings.grip_backend_timeout, app.clock)
        return d

    return post


def _agent(app: Any) -> Agent:
    """One HTTP client (and connection pool) per application, for its backends."""
    agent = app.__dict__.get("_grip_agent")
    if agent is None:
        agent = app.__dict__["_grip_agent"] = httpclient.agent(
            app.clock, app.settings_obj.grip_max_head)
    return agent  # type: ignore[no-any-return]


class GripProxyHandler(BaseHandler):
    """One request under a ``--grip-proxy`` prefix."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    subscriber: Any = None
    held = False  # counted in the application's grip_held
    stream_type = ""  # the Content-Type of the answer that became a stream

    def initialize(self, backend: str) -> None:
        self.backend = backend

    @cyclone.web.asynchronous
    def get(self, *args: Any) -> defer.Deferred[Any]:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            return self._open_websocket()
        return self._forward()

    head = post = put = patch = delete = options = get

    def _forward(self) -> defer.Deferred[Any]:
        request = self.request
        settings = self.application.settings_obj
        if has_dot_segments(request.path):  # (routes were matched on the path as sent)
            raise BadRequest("a path with '.' or '..' segments is not forwarded",
                             field="path")
        headers = self._forwarded_headers()
        body = FileBodyProducer(BytesIO(request.body)) if request.body else None
        url = (self.backend + request.uri).encode("utf-8")
        d = _agent(self.application).request(request.method.encode(), url, headers, body)
        limit = settings.grip_max_answer
        d.addCallback(lambda response: httpclient.read_body(response, limit).addCallback(
            lambda content: (response, content)))
        d.addTimeout(settings.grip_backend_timeout, self.application.clock)
        d.addCallbacks(self._answered, self._unreachable)
        return d

    def _forwarded_headers(self, link: bool = False, websocket: bool = False) -> Headers:
        """The client's headers less hop-by-hop and ``Grip-*`` ones, with
        ``X-Forwarded-For`` and, with ``--grip-key``, ``Grip-Sig``.  For a ``link``
        request (a next page, a recovery) the client's ``Last-Event-ID`` is left out
        too: the link says where to go on from (django-eventstream reads the header
        first, and would answer the first page again).  For a ``websocket`` (the
        requests of WebSocket-over-HTTP, signed one by one) the headers that protocol
        sets are left out, ``Meta-*`` above all: the client may not forge its own."""
        request = self.request
        headers = Headers()
        dropped = hop_by_hop({k.lower(): v for k, v in request.headers.items()})
        if link:
            dropped = dropped | {"last-event-id"}
        if websocket:
            dropped = dropped | WEBSOCKET_SET
        for name, value in request.headers.get_all():
            lowered = name.lower()
            if lowered not in dropped and not lowered.startswith("grip-") and not (
                    websocket and lowered.startswith("meta-")):
                headers.addRawHeader(name, value)
        headers.addRawHeader("X-Forwarded-For", request.connection.address)
        key = self.application.settings_obj.grip_key
        if key and not websocket:
            headers.addRawHeader("Grip-Sig", signature(key))
        return headers

    def _open_websocket(self) -> defer.Deferred[Any]:
        """A WebSocket client: the backend is asked (``OPEN``, WebSocket-over-HTTP)
        whether it takes it; its refusal is the client's answer."""
        request = self.request
        if has_dot_segments(request.path):
            raise BadRequest("a path with '.' or '..' segments is not forwarded",
                             field="path")
        lines = opening_lines(request)  # (or the 400 or 426 to answer)
        backend = _websocket_backend(self.application, self.backend + request.uri,
                                     self._forwarded_headers(websocket=True),
                                     secrets.token_hex(16))
        d = backend(encode([("OPEN", None)]), {})
        d.addCallbacks(lambda answer: self._websocket_opened(answer, lines, backend),
                       self._unreachable)
        return d

    def _websocket_opened(self, answer: tuple[int, dict[str, str], bytes],
                          lines: list[bytes], backend: Backend) -> None:
        """The backend's answer to ``OPEN``: the 101 with its headers and the client
        handed to a ``GripWebSocket``, or its refusal passed on as it came."""
        status, received, body = answer
        try:
            events = read_answer(status, received, body)
        except ValueError as exc:
            if status == 200:
                raise BadGateway(f"the backend's answer to a WebSocket: {exc}") from None
            try:
                self.set_status(checked_status(status))
            except GripError as error:
                raise BadGateway(str(error)) from None
            raw = Headers({name: [value] for name, value in received.items()})
            self._backend_headers(raw, received)
            self.finish(body)
            return
        if (events[0][0] if events else None) != "OPEN" and not (
                not events and "keep-alive-interval" in received):
            raise BadGateway("the backend did not accept the WebSocket (no OPEN)")
        dropped = hop_by_hop(received) | WEBSOCKET_ANSWER
        for name, value in received.items():
            if name not in dropped and not name.startswith(("grip-", "set-meta-")):
                lines.append(f"{name}: {value}".encode("latin-1"))
        protocol = GripWebSocket(self.application, backend, message_prefix(
            received.get("sec-websocket-extensions", "")), {})
        self.hand_over()
        self.request.connection.upgrade(protocol, b"\r\n".join(lines) + b"\r\n\r\n")
        protocol.take(received, events[1:])

    def _unreachable(self, failure: Any) -> None:
        failure = httpclient.failure_reason(failure)
        if failure.check(BadGateway):
            failure.raiseException()
        if failure.check(httpclient.AnswerTooLarge):
            option = "--grip-max-head" if failure.value.part == "head" else "--grip-max-answer"
            raise BadGateway(f"the backend's answer is too large: {failure.value} "
                             f"({option})")
        raise BadGateway(f"the backend at {self.backend} did not answer: "
                         f"{failure.getErrorMessage() or failure.type.__name__}")

    def _answered(self, result: tuple[Any, bytes]) -> defer.Deferred[Any] | None:
        response, body = result
        received = _received(response)
        try:
            hold = read_hold(received, self.application.settings_obj.grip_max_timeout)
            if hold is not None and hold.status:
                self.set_status(hold.status, responses.get(hold.status, "Unknown"))
            else:
                self.set_status(checked_status(response.code),
                                response.phrase.decode("latin-1") or None)
        except GripError as exc:
            raise BadGateway(f"the backend's GRIP instructions: {exc}") from None
        self._backend_headers(response.headers, received)
        if hold is None:
            link = read_next_link(received.get("grip-link", ""))
            if link and response.code == 200 and self.request.method == "GET":
                self.request.connection.transport.write(self._take_stream(received, body))
                self._follow(link, 1)  # (Pushpin's paging: the next page follows)
                return None
            self.finish(body)
            return None
        if hold.mode == "stream":
            head = self._take_stream(received, body)
            return self._hold_stream(hold, head, received)
        return self._hold_response(hold, body)

    def _backend_headers(self, raw: Any, received: dict[str, str]) -> None:
        """The answer carries the backend's headers, not the daemon's defaults (one
        ``Content-Type``, one ``Date``, one ``Server``: clients read the first), less
        hop-by-hop and ``Grip-*`` ones.  A ``Date`` is added when the backend sent
        none (RFC 9110 6.6.1), and ``nosniff`` when it named no ``Content-Type``, so
        a browser never guesses HTML from the body."""
        for name in ("Server", "Content-Type", "Date",
                     *(name for name, _ in default_headers(self.application, self.request))):
            self.clear_header(name)
        dropped = hop_by_hop(received)
        for name, values in raw.getAllRawHeaders():
            lowered = name.decode("latin-1").lower()
            if lowered not in dropped and not lowered.startswith("grip-"):
                for value in values:
                    self.add_header(name.decode("latin-1"), value.decode("latin-1"))
        if "date" not in received:
            self.set_header("Date", http_date())
        if "content-type" not in received:
            self.set_header("X-Content-Type-Options", "nosniff")

    def _take_stream(self, received: dict[str, str], body: bytes) -> bytes:
        """The answer becomes a stream: its head and ``body``, for the caller to write
        (cyclone writes nothing more for it)."""
        self.set_header("Connection", "close")  # the body ends when the stream does
        if "x-accel-buffering" not in received:  # (nginx must not buffer a stream)
            self.set_header("X-Accel-Buffering", "no")
        head = self.take_over() + body
        self.request.connection.start_streaming()
        self.stream_type = received.get("content-type", "")
        return head

    def _follow(self, link: str, pages: int) -> None:
        """Write the backend's answer at ``link`` into the stream (a ``Grip-Link``
        ``rel=next`` on an answer that holds nothing: Pushpin's paging), then hold as it
        says, follow its own next link (at most ``MAX_PAGES``), or end the stream."""
        transport = self.request.connection.transport
        settings = self.application.settings_obj
        url = (self.backend + link).encode("utf-8")
        d = _agent(self.application).request(b"GET", url, self._forwarded_headers(True),
                                             None)
        d.addCallback(lambda response: httpclient.read_body(
            response, settings.grip_max_answer).addCallback(lambda body: (response, body)))
        d.addTimeout(settings.grip_backend_timeout, self.application.clock)

        def answered(result: tuple[Any, bytes]) -> None:
            response, body = result
            if transport.disconnecting or response.code != 200:
                transport.loseConnection()
                return
            received = _received(response)
            try:
                hold = read_hold(received, settings.grip_max_timeout)
            except GripError:
                hold = None
            if hold is not None and hold.mode == "stream":
                received["content-type"] = self.stream_type
                self._hold_stream(hold, body, received)
                return
            transport.write(body)
            link = read_next_link(received.get("grip-link", ""))
            if link and pages < MAX_PAGES:
                self._follow(link, pages + 1)
            else:
                transport.loseConnection()

        d.addCallbacks(answered, lambda _: transport.loseConnection())

    def _hold_stream(self, hold: Hold, head: bytes, received: dict[str, str]) -> Any:
        """Hold the stream (its ``head`` taken by ``_take_stream``, written once the
        subscription is live) for what is published to the hold's channels."""
        app = self.application
        connection = self.request.connection
        self._count_held()
        self.subscriber = GripStreamSubscriber(
            connection.transport, app.registry.counters, app.settings_obj.max_pending,
            head, received.get("content-type", "").startswith("text/event-stream"),
            app.clock, hold, self._recover)
        return app.subscriptions.open(self.subscriber, hold.channels, None)

    def _recover(self, channel: str, link: str | None = None, pages: int = 1) -> None:
        """A gap on ``channel`` (an item's ``prev-id`` is not the last id written):
        the backend's next link is asked, with ``Grip-Last`` naming the last ids, and
        its answer's body is written into the stream (Pushpin's reliable mode); an
        answer that holds nothing and links to a next page is followed (at most
        ``MAX_PAGES``)."""
        sub = self.subscriber
        settings = self.application.settings_obj
        if link is None:
            self.application.registry.counters.grip_recoveries += 1
        headers = self._forwarded_headers(True)
        headers.setRawHeaders("Grip-Last", [", ".join(
            f"{name}; last-id={last}" for name, last in sub.last_ids.items())])
        url = (self.backend + (link or sub.next_link)).encode("utf-8")
        d = _agent(self.application).request(b"GET", url, headers, None)
        d.addCallback(lambda response: httpclient.read_body(
            response, settings.grip_max_answer).addCallback(lambda body: (response, body)))
        d.addTimeout(settings.grip_backend_timeout, self.application.clock)

        def recovered(result: tuple[Any, bytes]) -> None:
            response, body = result
            if sub is not self.subscriber:
                return
            if response.code != 200:
                sub.recovered(channel, b"", None)
                return
            received = _received(response)
            try:
                _, prev_ids, _ = read_channels(received.get("grip-channel", ""))
            except ValueError:
                prev_ids = {}
            following = read_next_link(received.get("grip-link", ""))
            if "grip-hold" not in received and following and pages < MAX_PAGES:
                sub.recovered(channel, body, None, done=False)
                self._recover(channel, following, pages + 1)
                return
            sub.recovered(channel, body, prev_ids.get(channel), following)

        def failed(failure: Any) -> None:
            # (the client sees no gap filled: it may reconnect with its Last-Event-ID)
            if sub is self.subscriber:
                sub.recovered(channel, b"", None)

        d.addCallbacks(recovered, failed)

    def _hold_response(self, hold: Hold, body: bytes) -> Any:
        app = self.application
        self.held_body = body
        self._count_held()
        self.subscriber = PollSubscriber(app.clock, self._publish_answers, hold.timeout,
                                         0, None)
        return app.subscriptions.open(self.subscriber, hold.channels, None)

    def _publish_answers(self, poll: PollSubscriber) -> None:
        """The first publish answers the held request (its data as the body); at the
        timeout, the backend's own answer does."""
        self._leave()
        if self._finished:
            return
        item = poll.events[0].grip if poll.events else None
        if item is not None and item.response is not None:
            code, headers, body = item.response  # (a published http-response)
            self.set_status(code, responses.get(code, "Unknown"))
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    self.set_header(name, value)
            self.finish(body)
        elif poll.events:
            self.set_status(200)
            self.finish(poll.events[0].data.encode("utf-8"))
        else:
            self.finish(self.held_body)

    def _count_held(self) -> None:
        self.held = True
        self.application.grip_held += 1

    def _leave(self) -> None:
        if self.held:
            self.held = False
            self.application.grip_held -= 1
        sub, self.subscriber = self.subscriber, None
        if sub is not None:
            self.application.subscriptions.close(sub)

    def on_connection_close(self, *args: Any) -> None:
        self._leave()
