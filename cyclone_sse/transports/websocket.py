"""The WebSocket transport (RFC 6455, Autobahn): a connection on the subscribe URL that
speaks a small JSON protocol, and receives events as text messages framed once per
event and sent as the same bytes to every subscriber.

Client to daemon::

    {"type": "subscribe", "id": 1, "channels": ["a", "news.*"], "lastEventId": "…",
     "token": "…"}
    {"type": "ping", "id": 2}

Daemon to client::

    {"type": "subscribed", "id": 1, "channels": […], "lastEventId": "<resume point>"}
    {"type": "gap", "reason": "expired", "lastEventId": "…"}   (replay not complete)
    {"type": "event", "channel": "a", "id": "…", "event": "message", "data": "…"}
    {"type": "pong", "id": 2}
    {"type": "error", "id": 1, "code": 403, "reason": "…"}

A connection holds one subscription.  Close codes: 1008 (policy: a refused Origin or
a message the protocol does not know), 1009 (too big), 1007 (invalid UTF-8), 1002
(protocol error), 1011 (a client too slow to read), 1001 (the daemon stops).
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cyclone_sse.auth.access import Credentials
from cyclone_sse.channels import is_pattern, split_channels
from cyclone_sse.event import Event
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.registry import SHUTDOWN_GRACE
from cyclone_sse.transports.stream import BoundedSubscriber

log = Logger()

#: Largest message (and frame) a client may send, bytes: requests are small.
MAX_CLIENT_MESSAGE = 64 * 1024
#: Seconds between WebSocket pings (and the wait for a pong before giving up).
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0


def prepared(event: Event, factory: WebSocketServerFactory) -> Any:
    """The event's message, framed once (cached on the event for every subscriber)."""
    if event.ws is None:
        event.ws = factory.prepareMessage(json.dumps(
            {"type": "event", "channel": event.channel, "id": event.id,
             "event": event.name or "message", "data": event.data},
            ensure_ascii=False).encode("utf-8"))
    return event.ws


@implementer(ISubscriber)
class WebSocketSubscriber(BoundedSubscriber):
    """One WebSocket connection's subscription; bounded like a slow SSE stream."""

    def __init__(self, protocol: SubscriberProtocol, request_id: object,
                 max_pending: int) -> None:
        super().__init__(protocol.transport, protocol.factory.app.registry.counters,
                         max_pending)
        self.protocol = protocol
        self.request_id = request_id

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if self.closed:
            return
        if not self.live:
            if not self.hold(events):
                self._overflow()
            return
        rest = self.unseen(events)
        for event in events if rest is None else rest:
            self._send(prepared(event, self.protocol.factory))

    def _send(self, message: Any) -> None:
        # payloadHybi: the framed bytes autobahn's PreparedMessage keeps (an attribute it
        # does not document; tests/test_websocket.py checks it is still there)
        if self.queued(len(message.payloadHybi)):
            self.protocol.sendPreparedMessage(message)

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        events = self.release(replay)
        # The position the client holds once it has this message: its own while a
        # replay follows (each event then moves it), else where this subscription
        # starts (the head, or past a gap with nothing retained).
        self.protocol.send_json({"type": "subscribed", "id": self.request_id,
                                 "channels": self.protocol.channels,
                                 "lastEventId": last_id if events else self.resume_id()})
        if replay.gap:
            self.protocol.send_json({"type": "gap", "reason": replay.gap,
                                     "lastEventId": last_id})
        for event in events:
            self._send(prepared(event, self.protocol.factory))

    def heartbeat(self) -> None:
        pass  # WebSocket pings (autobahn's auto-ping) keep the connection alive

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.close_with(1001, "the daemon is stopping")


class _Quiet:
    """A logger that says nothing: Autobahn logs a line per connection for events that
    come in floods (a peer that does not finish the closing handshake, a bad frame);
    the daemon's counters and close codes tell those instead."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class SubscriberProtocol(WebSocketServerProtocol):
    """The JSON protocol of one WebSocket client."""

    log = _Quiet()  # (Autobahn's per-connection logger, replaced: see _Quiet)

    factory: SubscriberFactory
    subscriber: WebSocketSubscriber | None = None
    handler: Any = None  # the SubscribeHandler that upgraded (its authorize hook)
    channels: list[str]

    def onConnect(self, request: Any) -> None:
        origin = request.headers.get("origin")
        if origin and self.factory.app.allowed_origin(origin) is None:
            raise ConnectionDeny(403, "this Origin may not connect (--cors-origin)")
        peer = self.transport.getPeer() if self.transport is not None else None
        self.remote_ip = str(getattr(peer, "host", ""))
        self.query_token = (request.params.get("token") or [None])[0]
        self.cookies = request.headers.get("cookie")

    def close_with(self, code: int, reason: str) -> None:
        """Close with a protocol code (``sendClose`` only takes 1000 and 3000-4999)."""
        self.sendCloseFrame(code, reason.encode("utf-8"), isReply=False)

    def send_json(self, message: dict[str, object]) -> None:
        self.sendMessage(json.dumps(message, ensure_ascii=False).encode("utf-8"))

    def error(self, request_id: object, code: int, reason: str) -> None:
        self.send_json({"type": "error", "id": request_id, "code": code, "reason": reason})

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            self.close_with(1008, "messages are JSON objects")
            return
        if not isinstance(message, dict):
            self.close_with(1008, "messages are JSON objects")
            return
        kind, request_id = message.get("type"), message.get("id")
        if kind == "ping":
            self.send_json({"type": "pong", "id": request_id})
        elif kind == "subscribe":
            self.subscribe(message, request_id)
        else:
            self.error(request_id, 400, f"unknown message type {str(kind)[:50]!r}: "
                                        "use subscribe or ping")

    def subscribe(self, message: dict[str, Any], request_id: object) -> None:
        app = self.factory.app
        if self.subscriber is not None:
            self.error(request_id, 409, "this connection is subscribed already")
            return
        try:
            channels = message.get("channels")
            if isinstance(channels, str):
                channels = [channels]
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise ValueError("channels: a list of channel names")
            channels = split_channels(channels, app.settings_obj.max_channels)
            last_id = message.get("lastEventId")
            if last_id is not None and not isinstance(last_id, str):
                raise ValueError("lastEventId: a string")
            app.admit_replay(channels, last_id)
        except Exception as exc:
            self.error(request_id, getattr(exc, "status", 400), str(exc))
            return
        token = message.get("token") if isinstance(message.get("token"), str) else None
        credentials = Credentials(token or self.query_token, self.cookies, None,
                                  self.remote_ip)
        self.channels = channels
        handler = self.handler
        hooked = handler is not None and handler.has_authorize_hook()
        d = app.gate.check(credentials, channels, handler.can_read if hooked else None)
        if hooked:  # --app's hook decides too, as for streams
            names = [c for c in channels if not is_pattern(c)]
            d.addCallback(lambda access: defer.maybeDeferred(handler.authorize, names)
                          .addCallback(lambda _: access))
        d.addCallback(self._allowed, channels, last_id, request_id)
        d.addErrback(lambda failure: self.error(
            request_id, getattr(failure.value, "status", 500), failure.getErrorMessage()))

    def _allowed(self, access: Any, channels: list[str], last_id: str | None,
                 request_id: object) -> None:
        app = self.factory.app
        if self.transport is None or self.subscriber is not None:
            return
        sub = WebSocketSubscriber(self, request_id, app.settings_obj.max_pending)
        if access is not None and any(is_pattern(c) for c in channels):
            sub.access = access
        self.subscriber = sub
        app.subscriptions.open(sub, channels, last_id)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        sub, self.subscriber = self.subscriber, None
        if sub is not None:
            self.factory.app.subscriptions.close(sub)


class SubscriberFactory(WebSocketServerFactory):
    """Builds the protocol of each upgraded connection of one application."""

    protocol = SubscriberProtocol  # type: ignore[assignment]  # (Factory's is looser)

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_CLIENT_MESSAGE, maxMessagePayloadSize=MAX_CLIENT_MESSAGE,
            autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT,
            perMessageCompressionAccept=lambda offers: None,  # off by default
            requireMaskedClientFrames=True, failByDrop=False,
            # a peer gets as long to answer our close as a stopping daemon waits
            closeHandshakeTimeout=SHUTDOWN_GRACE)
