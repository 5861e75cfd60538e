"""SockJS endpoints (``--sockjs-prefix``): ``<prefix>/info`` (what sockjs-client asks
first), ``<prefix>/iframe.html`` (the page of its iframe transports),
``<prefix>/<server>/<session>/websocket`` (a SockJS session over a WebSocket),
``.../xhr``, ``.../xhr_streaming``, ``.../eventsource`` and ``.../jsonp`` (a session's
frames over HTTP requests) with ``.../xhr_send`` and ``.../jsonp_send`` (what its
client sends), and ``<prefix>/websocket`` (the daemon's own WebSocket protocol,
unframed, as SockJS servers offer it to plain WebSocket clients)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

import cyclone.web

from cyclone_sse.errors import BadRequest, CycloneSSEError, NotFound, TooManyRequests
from cyclone_sse.handlers.base import BaseHandler

#: Bytes an xhr_streaming or eventsource request carries before it ends (the client
#: then makes the next one): SockJS's default, bounding what a request buffers.
STREAM_LIMIT = 128 * 1024
#: What an xhr_streaming answer starts with (old browsers show nothing before 2 KiB).
XHR_PRELUDE = b"h" * 2048 + b"\n"
#: A jsonp callback: a name, no script (what sockjs-client sends: ``_jp.a1b2c3``).
JSONP_CALLBACK = re.compile(r"[A-Za-z0-9_.]{1,64}")


def default_channels(settings: Any) -> list[str]:
    """``--sockjs-channels`` (checked at start-up)."""
    return [c.strip() for c in settings.sockjs_channels.split(",") if c.strip()]


class SockJSRefusal(CycloneSSEError):
    """A request SockJS refuses with 500 and its words."""

    status = 500


class SockJSHandler(BaseHandler):
    """The SockJS endpoints' CORS: sockjs-client asks from the page's origin with
    credentials, so an allowed Origin is answered by name (``*`` is not enough)."""

    methods = "OPTIONS, POST"

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
        self.set_header("Cache-Control", "public, max-age=31536000")
        self.set_header("Access-Control-Max-Age", "31536000")
        self.finish()

    def session(self, key: str, create: bool) -> Any:
        """The session ``key`` (made when ``create`` and unknown; else None)."""
        from cyclone_sse.transports.sockjs import SockJSSession
        app = self.application
        sessions = app.__dict__.setdefault("_sockjs_sessions", {})
        found = sessions.get(key)
        if found is None and create:
            # a session outlives its requests: at most as many as connections
            if len(sessions) >= app.connection_limits.max_connections:
                raise TooManyRequests("too many SockJS sessions (--max-connections)")
            found = SockJSSession(app.websockets, self.request.connection.address,
                                  self.get_argument("token", None),
                                  self.request.headers.get("Cookie"),
                                  default_channels(app.settings_obj), sessions, key)
        return found


class SockJSInfoHandler(SockJSHandler):
    """``<prefix>/info``: the server's abilities, never cached."""

    methods = "OPTIONS, GET"

    def get(self, *args: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store, no-cache, no-transform, "
                                         "must-revalidate, max-age=0")
        self.finish(json.dumps({"websocket": True, "cookie_needed": False,
                                "origins": ["*:*"], "entropy": secrets.randbits(32)}))



class SockJSIframeHandler(BaseHandler):
    """``<prefix>/iframe.html`` (and ``iframe-<anything>.html``): the page sockjs-client
    opens in a hidden iframe on the daemon's origin for its iframe transports; it loads
    ``--sockjs-url`` and hands over to it.  Cached for a year, with an ETag."""

    def get(self, *args: Any) -> None:
        url = json.dumps(self.application.settings_obj.sockjs_url)
        page = ("<!doctype html><html><head><meta charset=\"utf-8\"><script>"
                "document.domain = document.domain;"
                "_sockjs_onload = function () { SockJS.bootstrap_iframe(); };</script>"
                f"<script src={url}></script></head>"
                "<body><p>cyclone-sse: the SockJS iframe.</p></body></html>").encode()
        tag = '"' + hashlib.sha1(page).hexdigest() + '"'
        self.set_header("Cache-Control", "public, max-age=31536000")
        self.set_header("ETag", tag)
        if self.request.headers.get("If-None-Match") == tag:
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(page)


class SockJSSendHandler(SockJSHandler):
    """``.../xhr_send`` and ``.../jsonp_send``: what the client sends, a JSON array of
    messages (for jsonp_send, as the ``d`` field of a form when it posts a form)."""

    def initialize(self, jsonp: bool = False) -> None:
        self.jsonp = jsonp

    def post(self, server: str, key: str) -> None:
        session = self.session(key, create=False)
        if session is None:
            raise NotFound("no such SockJS session")
        body = self.request.body
        if self.jsonp and self.request.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"):
            body = self.get_argument("d", "").encode("utf-8")
        if not body:
            self.send_plain(500, b"Payload expected.")
            return
        try:
            messages = json.loads(body)
        except ValueError:
            messages = None
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            self.send_plain(500, b"Broken JSON encoding.")
            return
        for message in messages:
            if session.open:
                session.on_message(message)
        if self.jsonp:
            self.send_plain(200, b"ok")
            return
        self.set_status(204)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish()

    def send_plain(self, status: int, text: bytes) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(text)


class _Poll:
    """An ``xhr`` request (or a ``jsonp`` one, with its ``callback``): answered with
    the session's next frame."""

    def __init__(self, handler: BaseHandler, callback: str | None = None) -> None:
        self.handler = handler
        self.callback = callback

    def send(self, frame: bytes) -> bool:
        handler = self.handler
        if not handler._finished:
            handler.set_header("Content-Type", "application/javascript; charset=UTF-8")
            if self.callback is None:
                handler.finish(frame + b"\n")
            else:  # (/**/: a response sniffed as another type runs nothing)
                handler.finish(b"/**/%s(%s);\r\n" % (self.callback.encode("ascii"),
                                                       json.dumps(frame.decode()).encode()))
        return False


class _Stream:
    """An ``xhr_streaming`` or ``eventsource`` request: frames as they come, until
    ``STREAM_LIMIT`` bytes (the client then makes the next request)."""

    def __init__(self, transport: Any, eventsource: bool) -> None:
        self.transport = transport
        self.eventsource = eventsource
        self.written = 0

    def send(self, frame: bytes) -> bool:
        data = b"data: " + frame + b"\r\n\r\n" if self.eventsource else frame + b"\n"
        self.transport.write(data)
        self.written += len(data)
        if self.written >= STREAM_LIMIT:
            self.transport.loseConnection()
            return False
        return True


class SockJSReceiveHandler(SockJSHandler):
    """``.../xhr`` (a poll), ``.../xhr_streaming`` and ``.../eventsource``: the
    session's frames (the session made by its first request)."""

    receiver: Any = None
    held: Any = None

    def initialize(self, kind: str) -> None:
        self.kind = kind
        if kind in ("eventsource", "jsonp"):
            self.methods = "OPTIONS, GET"

    @cyclone.web.asynchronous
    def post(self, server: str, key: str) -> None:
        callback = None
        if self.kind == "jsonp":
            callback = self.get_argument("c", None)
            if not callback:
                raise SockJSRefusal('"callback" parameter required')
            if not JSONP_CALLBACK.fullmatch(callback):
                raise SockJSRefusal('invalid "callback" parameter')
        session = self.held = self.session(key, create=True)
        if self.kind in ("xhr", "jsonp"):
            self.receiver = _Poll(self, callback)
        else:
            self.set_header("Content-Type", "text/event-stream; charset=UTF-8"
                            if self.kind == "eventsource" else
                            "application/javascript; charset=UTF-8")
            self.set_header("Cache-Control", "no-store, no-cache, no-transform, "
                                             "must-revalidate, max-age=0")
            self.set_header("Connection", "close")  # (the body ends when the stream does)
            self.set_header("X-Accel-Buffering", "no")
            head = self.take_over()
            connection = self.request.connection
            connection.start_streaming()
            connection.transport.write(head + (b"\r\n" if self.kind == "eventsource"
                                               else XHR_PRELUDE))
            self.receiver = _Stream(connection.transport, self.kind == "eventsource")
        session.attach(self.receiver)

    get = post

    def on_connection_close(self, *args: Any) -> None:
        if self.held is not None and self.receiver is not None:
            self.held.detach(self.receiver)


class SockJSWebSocketHandler(BaseHandler):
    """``<prefix>/<server>/<session>/websocket``, and ``<prefix>/websocket`` (raw)."""

    def initialize(self, raw: bool = False) -> None:
        self.raw = raw

    def get(self, *args: Any) -> None:
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise BadRequest('Can "Upgrade" only to "WebSocket".')
        from cyclone_sse.transports.sockjs import SockJSProtocol
        from cyclone_sse.transports.websocket import SubscriberProtocol
        request = self.request
        hub = self.application.websockets
        response, extensions = hub.handshake(request)  # (or the error to answer)
        connection = request.connection
        arguments = (hub, extensions, connection.address, self.get_argument("token", None),
                     request.headers.get("Cookie"), None)
        protocol = SubscriberProtocol(*arguments) if self.raw else SockJSProtocol(
            *arguments, channels=default_channels(self.application.settings_obj))
        self.hand_over()  # (nothing may fail after it: the answer is the upgrade's)
        connection.upgrade(protocol, response)


def routes(prefixes: str) -> list[tuple[Any, ...]]:
    """The routes of every ``--sockjs-prefix``."""
    found: list[tuple[Any, ...]] = []
    for prefix in (p.strip().rstrip("/") for p in prefixes.split(",")):
        if not prefix:
            continue
        base = "/" + prefix.lstrip("/")
        found += [(base + "/info", SockJSInfoHandler),
                  (base + r"/iframe[0-9A-Za-z.-]*\.html", SockJSIframeHandler),
                  (base + "/websocket", SockJSWebSocketHandler, {"raw": True}),
                  (base + r"/[^/.]+/[^/.]+/websocket", SockJSWebSocketHandler),
                  (base + r"/([^/.]+)/([^/.]+)/xhr_send", SockJSSendHandler),
                  (base + r"/([^/.]+)/([^/.]+)/jsonp_send", SockJSSendHandler,
                   {"jsonp": True}),
                  *((base + rf"/([^/.]+)/([^/.]+)/{kind}", SockJSReceiveHandler,
                     {"kind": kind})
                    for kind in ("xhr", "xhr_streaming", "eventsource", "jsonp"))]
    return found
