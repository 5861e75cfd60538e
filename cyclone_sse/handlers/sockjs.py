"""SockJS endpoints (``--sockjs-prefix``, and the protocol suite's test services with
``--sockjs-test-services``): ``<prefix>`` (the greeting), ``<prefix>/info`` (what
sockjs-client asks first), ``<prefix>/iframe.html`` (the page of its iframe transports),
``<prefix>/<server>/<session>/websocket`` (a SockJS session over a WebSocket),
``.../xhr``, ``.../xhr_streaming``, ``.../eventsource``, ``.../htmlfile`` and
``.../jsonp`` (a session's frames over HTTP requests) with ``.../xhr_send`` and
``.../jsonp_send`` (what its client sends), and ``<prefix>/websocket`` (the daemon's own
WebSocket protocol, unframed, as SockJS servers offer it to plain WebSocket clients)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from email.utils import formatdate
from time import time
from typing import Any

import cyclone.web

from cyclone_sse.errors import BadRequest, NotFound, TooManyRequests
from cyclone_sse.event import Event
from cyclone_sse.handlers.base import BaseHandler
from cyclone_sse.transports.sockjs import (
    SHAPES,
    TEST_SERVICES,
    TEST_STREAM_LIMIT,
    Receiver,
    SockJSService,
    in_chunk,
    stream_bytes,
    streamed_data,
)
from cyclone_sse.transports.stream import BoundedWriter

#: What an xhr_streaming answer starts with (old browsers show nothing before 2 KiB).
XHR_PRELUDE = b"h" * 2048 + b"\n"
#: A jsonp or htmlfile callback: a name, no script (sockjs-client sends ``_jp.a1b2c3``).
CALLBACK = re.compile(r"[A-Za-z0-9_.]{1,64}")
#: A ``JSESSIONID`` a client sent that is echoed back (anything else: ``dummy``).
SESSION_COOKIE = re.compile(r"[A-Za-z0-9_.+/=-]{1,128}")
#: Cache-Control of what must never be cached (the protocol's exact value).
NOT_CACHED = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
#: A year, the protocol's lifetime of what is cached (OPTIONS answers, iframe.html).
YEAR = 31536000
#: The page an htmlfile request starts with (the protocol's; %s: the callback), padded
#: past 1 KiB so that old browsers start running it at once.
HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.%s;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>
"""
#: The iframe page (the protocol's; %s: ``--sockjs-url`` as a JSON string).
IFRAME_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src=%s></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""


def services(settings: Any) -> list[SockJSService]:
    """The SockJS endpoints the options ask for."""
    channels = tuple(c.strip() for c in settings.sockjs_channels.split(",") if c.strip())
    found = [SockJSService("/" + prefix.lstrip("/"), "daemon", channels,
                           cookie_needed=settings.sockjs_jsessionid)
             for prefix in (p.strip().rstrip("/") for p in settings.sockjs_prefix.split(","))
             if prefix]
    if settings.sockjs_test_services:
        found += [SockJSService(prefix, kind, websocket=websocket, cookie_needed=cookie,
                                stream_limit=TEST_STREAM_LIMIT)
                  for prefix, kind, websocket, cookie in TEST_SERVICES]
    return found


class SockJSHandler(BaseHandler):
    """What every SockJS endpoint answers alike: CORS (sockjs-client asks from the
    page's origin with credentials, so an allowed Origin is answered by name), OPTIONS,
    the ``JSESSIONID`` cookie, and its refusals in plain text."""

    methods = "OPTIONS, POST"
    service: SockJSService

    def initialize(self, service: SockJSService, kind: str = "") -> None:
        self.service = service
        self.kind = kind

    def set_default_headers(self) -> None:
        super().set_default_headers()
        origin = self.request.headers.get("Origin")
        if origin and self.application.allowed_origin(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Vary", "Origin")

    def options(self, *args: Any) -> None:
        self.set_status(204)
        self.set_header("Access-Control-Allow-Methods", self.methods)
        asked = self.request.headers.get("Access-Control-Request-Headers")
        if asked:
            self.set_header("Access-Control-Allow-Headers", asked)
        self.cache_for_a_year()
        self.set_header("Access-Control-Max-Age", str(YEAR))
        self.finish()

    def cache_for_a_year(self) -> None:
        self.set_header("Cache-Control", f"public, max-age={YEAR}")
        self.set_header("Expires", formatdate(time() + YEAR, usegmt=True))

    def not_cached(self) -> None:
        self.set_header("Cache-Control", NOT_CACHED)

    def session_cookie(self) -> None:
        """``JSESSIONID`` for a service that asks for it: the client's own, or one."""
        if self.service.cookie_needed:
            given = self.get_cookie("JSESSIONID", "")
            value = given if SESSION_COOKIE.fullmatch(given) else "dummy"
            self.set_header("Set-Cookie", f"JSESSIONID={value}; Path=/")

    def refuse(self, status: int, text: str) -> None:
        """A SockJS refusal: the protocol's words in plain text."""
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(text.encode("utf-8"))

    def session(self, key: str, create: bool) -> Any:
        """The session ``key`` of this service (made when ``create`` and unknown; else
        None)."""
        from cyclone_sse.transports.sockjs import SockJSSession
        app = self.application
        sessions = app.sockjs_sessions
        key = self.service.prefix + "/" + key
        found = sessions.get(key)
        if found is None and create:
            # a session outlives its requests: at most as many as connections
            if len(sessions) >= app.connection_limits.max_connections:
                raise TooManyRequests("too many SockJS sessions (--max-connections)")
            found = SockJSSession(app.websockets, self.request.connection.address,
                                  self.get_argument("token", None),
                                  self.request.headers.get("Cookie"), self.service,
                                  sessions, key)
        return found


class SockJSGreetingHandler(SockJSHandler):
    """``<prefix>`` and ``<prefix>/``: the protocol's greeting."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(b"Welcome to SockJS!\n")


class SockJSInfoHandler(SockJSHandler):
    """``<prefix>/info``: the server's abilities, never cached."""

    methods = "OPTIONS, GET"

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.not_cached()
        self.finish(json.dumps({"websocket": self.service.websocket,
                                "cookie_needed": self.service.cookie_needed,
                                "origins": ["*:*"], "entropy": secrets.randbits(32)}))


class SockJSIframeHandler(SockJSHandler):
    """``<prefix>/iframe.html`` (and ``iframe-<anything>.html``): the page sockjs-client
    opens in a hidden iframe on the daemon's origin for its iframe transports; it loads
    ``--sockjs-url`` and hands over to it.  Cached for a year, with an ETag."""

    def get(self) -> None:
        page = (IFRAME_PAGE % json.dumps(self.application.settings_obj.sockjs_url)).encode()
        tag = '"' + hashlib.sha1(page).hexdigest() + '"'
        self.cache_for_a_year()
        self.set_header("ETag", tag)
        if self.request.headers.get("If-None-Match") == tag:
            self.set_status(304)
            self.clear_header("Content-Type")
            self.finish()
            return
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(page)


class SockJSSendHandler(SockJSHandler):
    """``.../xhr_send`` and ``.../jsonp_send`` (``kind``): what the client sends, a JSON
    array of messages (for jsonp_send, as the ``d`` field of a form when it posts one)."""

    def post(self, server: str, key: str) -> None:
        session = self.session(key, create=False)
        if session is None:
            raise NotFound("no such SockJS session")
        self.session_cookie()
        self.not_cached()
        body = self.request.body
        if self.kind == "jsonp_send" and self.request.headers.get(
                "Content-Type", "").startswith("application/x-www-form-urlencoded"):
            body = self.get_argument("d", "").encode("utf-8")
        if not body:
            self.refuse(500, "Payload expected.")
            return
        try:
            messages = json.loads(body)
        except ValueError:
            messages = None
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            self.refuse(500, "Broken JSON encoding.")
            return
        for message in messages:
            if session.open:
                session.on_message(message)
        if self.kind == "jsonp_send":
            self.refuse(200, "ok")  # (a body: some browsers mishandle 204 here)
            return
        self.set_status(204)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish()


class _Poll(Receiver):
    """An ``xhr`` request (or a ``jsonp`` one, with its ``callback``): answered with
    the session's next frame."""

    def __init__(self, handler: BaseHandler, kind: str, callback: str | None) -> None:
        self.handler = handler
        self.kind = kind
        self.callback = callback

    def send(self, frame: bytes) -> bool:
        handler = self.handler
        self.done = True
        if not handler._finished:
            handler.set_header("Content-Type", "application/javascript; charset=UTF-8")
            if self.callback is None:
                handler.finish(frame + b"\n")
            else:  # (/**/: a response sniffed as another type runs nothing)
                handler.finish(b"/**/%s(%s);\r\n" % (self.callback.encode("ascii"),
                                                       json.dumps(frame.decode()).encode()))
        return False


class _Stream(Receiver):
    """An ``xhr_streaming``, ``eventsource`` or ``htmlfile`` request: frames as they
    come (in HTTP/1.1 chunks), until the service's streaming limit or a close frame
    (the client then makes the next request)."""

    def __init__(self, session: Any, out: BoundedWriter, kind: str, chunked: bool,
                 limit: int) -> None:
        self.session = session
        self.out = out  # (--max-pending bounds what waits for a client that stopped reading)
        self.kind = kind
        self.chunked = chunked
        self.shape = SHAPES.index((kind, chunked))
        self.limit = limit
        self.written = 0

    def send(self, frame: bytes) -> bool:
        data, size = stream_bytes(self.kind, frame, self.chunked)
        self.out.write(data)
        self.written += size
        return (self.written < self.limit and frame[:1] != b"c") or self.end()

    def send_data(self, event: Event) -> bool:
        data, size = streamed_data(event, self.shape)
        self.out.write(data)
        self.written += size
        return self.written < self.limit or self.end()

    def on_connection_close(self) -> None:
        """The connection ended (told by the HTTP layer: see ``hold_stream``)."""
        self.session.cut(self)

    def end(self) -> bool:
        """The stream is over (at its limit, or after a close frame): False."""
        self.done = True
        if self.chunked:
            self.out.write(b"0\r\n\r\n")
        transport = self.out.transport
        transport.unregisterProducer()
        transport.loseConnection()
        return False


class SockJSReceiveHandler(SockJSHandler):
    """``.../xhr``, ``.../jsonp`` (polls), ``.../xhr_streaming``, ``.../eventsource``
    and ``.../htmlfile`` (streams): the session's frames (the session made by its first
    request)."""

    receiver: Any = None
    held: Any = None

    def initialize(self, service: SockJSService, kind: str = "") -> None:
        super().initialize(service, kind)
        if kind in ("eventsource", "jsonp", "htmlfile"):
            self.methods = "OPTIONS, GET"

    @cyclone.web.asynchronous
    def post(self, server: str, key: str) -> None:
        kind = self.kind
        callback = None
        if kind in ("jsonp", "htmlfile"):
            callback = self.get_argument("c", None, strip=False)
            if not callback:
                self.refuse(500, '"callback" parameter required')
                return
            if not CALLBACK.fullmatch(callback):
                self.refuse(500, 'invalid "callback" parameter')
                return
        session = self.held = self.session(key, create=True)
        self.session_cookie()
        self.not_cached()
        if kind in ("xhr", "jsonp"):
            self.receiver = _Poll(self, kind, callback)
        else:
            self.set_header("Content-Type", {
                "eventsource": "text/event-stream",
                "htmlfile": "text/html; charset=UTF-8"}.get(
                    kind, "application/javascript; charset=UTF-8"))
            chunked = self.request.version == "HTTP/1.1"
            if chunked:
                self.set_header("Transfer-Encoding", "chunked")
            self.set_header("Connection", "close")  # (the body ends when the stream does)
            self.set_header("X-Accel-Buffering", "no")
            head = self.take_over()
            connection = self.request.connection
            connection.start_streaming()
            connection.transport.write(head)
            app = self.application
            stream = _Stream(session, BoundedWriter(connection.transport,
                                                    app.registry.counters,
                                                    app.settings_obj.max_pending),
                             kind, chunked, self.service.stream_limit)
            if kind == "htmlfile":
                page = (HTMLFILE_HEAD % callback).encode("ascii")
                prelude = page + b" " * (1024 - len(page)) + b"\r\n\r\n"
            else:
                prelude = b"\r\n" if kind == "eventsource" else XHR_PRELUDE
            connection.transport.write(in_chunk(prelude, chunked))
            self.receiver = stream
            connection.hold_stream(stream)  # (this handler is let go)
        session.attach(self.receiver)

    get = post

    def on_connection_close(self, *args: Any) -> None:
        if self.held is not None and self.receiver is not None:
            self.held.cut(self.receiver)


class SockJSWebSocketHandler(SockJSHandler):
    """``<prefix>/<server>/<session>/websocket`` (``kind``: session), and
    ``<prefix>/websocket`` (``kind``: raw)."""

    def get(self) -> None:
        if not self.service.websocket:
            raise NotFound("WebSockets are off on this SockJS endpoint")
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise BadRequest('Can "Upgrade" only to "WebSocket".')
        from cyclone_sse.transports.sockjs import RawTestWebSocket, SockJSProtocol
        from cyclone_sse.transports.websocket import SubscriberProtocol
        request = self.request
        hub = self.application.websockets
        response, extensions = hub.handshake(request)  # (or the error to answer)
        connection = request.connection
        arguments = (hub, extensions, connection.address, self.get_argument("token", None),
                     request.headers.get("Cookie"), None)
        protocol: SubscriberProtocol
        if self.kind == "session":
            protocol = SockJSProtocol(*arguments, service=self.service)
        elif self.service.kind == "daemon":
            protocol = SubscriberProtocol(*arguments)
        else:
            protocol = RawTestWebSocket(*arguments, service=self.service)
        self.hand_over()  # (nothing may fail after it: the answer is the upgrade's)
        connection.upgrade(protocol, response)

    def post(self) -> None:
        """Not a method of WebSockets: the protocol's bare 405."""
        self.set_status(405)
        self.set_header("Allow", "GET")
        self.clear_header("Content-Type")
        self.finish()


def routes(settings: Any) -> list[tuple[Any, ...]]:
    """The routes of every SockJS endpoint."""
    found: list[tuple[Any, ...]] = []
    session = r"/([^/.]+)/([^/.]+)/"
    for service in services(settings):
        base = service.prefix
        given = {"service": service}
        found += [(base + "/?", SockJSGreetingHandler, given),
                  (base + "/info", SockJSInfoHandler, given),
                  (base + r"/iframe(?:-[0-9A-Za-z.-]*)?\.html", SockJSIframeHandler, given),
                  (base + "/websocket", SockJSWebSocketHandler, {**given, "kind": "raw"}),
                  (base + r"/[^/.]+/[^/.]+/websocket", SockJSWebSocketHandler,
                   {**given, "kind": "session"}),
                  *((base + session + kind, SockJSSendHandler, {**given, "kind": kind})
                    for kind in ("xhr_send", "jsonp_send")),
                  *((base + session + kind, SockJSReceiveHandler, {**given, "kind": kind})
                    for kind in ("xhr", "xhr_streaming", "eventsource", "htmlfile",
                                 "jsonp"))]
    return found
