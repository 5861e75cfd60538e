"""SockJS endpoints (``--sockjs-prefix``): ``<prefix>/info`` (what sockjs-client asks
first), ``<prefix>/<server>/<session>/websocket`` (a SockJS session over a WebSocket)
and ``<prefix>/websocket`` (the daemon's own WebSocket protocol, unframed, as SockJS
servers offer it to plain WebSocket clients)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from cyclone_sse.errors import BadRequest
from cyclone_sse.handlers.base import BaseHandler


class SockJSInfoHandler(BaseHandler):
    """``<prefix>/info``: the server's abilities, never cached.  sockjs-client asks it
    from the page's origin with credentials: an allowed Origin is answered by name
    (``*`` is not enough with credentials)."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        origin = self.request.headers.get("Origin")
        if origin and self.application.allowed_origin(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Vary", "Origin")

    def get(self, *args: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store, no-cache, no-transform, "
                                         "must-revalidate, max-age=0")
        self.finish(json.dumps({"websocket": True, "cookie_needed": False,
                                "origins": ["*:*"], "entropy": secrets.randbits(32)}))

    def options(self, *args: Any) -> None:
        self.set_status(204)
        self.set_header("Access-Control-Allow-Methods", "OPTIONS, GET")
        self.set_header("Cache-Control", "public, max-age=31536000")
        self.set_header("Access-Control-Max-Age", "31536000")
        self.finish()


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
        named = self.application.settings_obj.sockjs_channels
        protocol = SubscriberProtocol(*arguments) if self.raw else SockJSProtocol(
            *arguments, channels=[c.strip() for c in named.split(",") if c.strip()])
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
                  (base + "/websocket", SockJSWebSocketHandler, {"raw": True}),
                  (base + r"/[^/.]+/[^/.]+/websocket", SockJSWebSocketHandler)]
    return found
