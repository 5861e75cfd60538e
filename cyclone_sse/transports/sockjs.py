"""SockJS (protocol 0.3, what sockjs-client 1.x speaks) over its WebSocket transport
(``<prefix>/<server>/<session>/websocket``): the daemon opens with ``o``, sends messages
as ``a["...", ...]`` and closes with ``c[code,"reason"]``; the client sends JSON arrays
of strings.  Each string the client sends is a message of the daemon's WebSocket
protocol (subscribe, publish, presence...: ``transports.websocket``), answered the same
way.  A session opened on a prefix with default channels (``--sockjs-channels``) is
subscribed to them at once and gets each of their events' data as one message, as is:
the pages of the articles listen and never speak."""

from __future__ import annotations

import json
from typing import Any

from cyclone_sse.errors import CycloneSSEError
from cyclone_sse.event import Event
from cyclone_sse.history.base import Replay
from cyclone_sse.transports.websocket import SubscriberProtocol, WebSocketSubscriber, text_frame

#: The request id of a session's subscription to the default channels.
DEFAULTS = "sockjs-defaults"
#: The frame of the last event's data, as a message: the sessions of a channel get
#: the same one in turn, so it is framed once a publish.
_last: list[Any] = [None, b""]


def data_frame(event: Event) -> bytes:
    """``a["<the event's data>"]`` in a WebSocket text frame."""
    if _last[0] is not event:
        _last[:] = [event, text_frame(b"a" + json.dumps([event.data]).encode("utf-8"))]
    return _last[1]  # type: ignore[no-any-return]


class DataSubscriber(WebSocketSubscriber):
    """A session's subscription to the default channels: each event's data as one
    message, nothing else (no ``subscribed``, no ids)."""

    def send_events(self, events: list[Event], batch: bool = False) -> None:
        protocol = self.protocol
        if not protocol.open or self.out.closed:
            return
        for event in events:
            if protocol.deflate:  # (compressed with this connection's own context)
                SubscriberProtocol.send_text(protocol, b"a" + json.dumps(
                    [event.data]).encode("utf-8"))
            else:
                self.out.write(data_frame(event))

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        events = self.release(replay, last_id)
        if events:
            self.send_events(events)
        self.protocol.went_live(self)

    def push(self, message: bytes) -> None:
        pass  # (join and leave are the JSON protocol's)

    def expire(self) -> None:
        self.expiry = None
        if not self.closed:
            self.protocol.end(self)


class SockJSProtocol(SubscriberProtocol):
    """One SockJS session over a WebSocket."""

    def __init__(self, *args: Any, channels: list[str] | None = None) -> None:
        super().__init__(*args)
        self.default_channels = channels or []
        self.framed_alone = True  # (each JSON message inside this session's a[...] frame)

    def new_subscriber(self, request_id: object, channels: list[str],
                       user: str | None) -> WebSocketSubscriber:
        kind = DataSubscriber if request_id == DEFAULTS else WebSocketSubscriber
        return kind(self, request_id, channels, user)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.send_sockjs(b"o")
        if self.default_channels:
            try:
                self.subscribe({"channels": self.default_channels}, DEFAULTS)
            except CycloneSSEError as exc:
                self.error(DEFAULTS, exc.status, str(exc))

    def received(self, text: str) -> None:
        """A frame from the client: a JSON array of messages (or one string)."""
        if not text:
            return
        try:
            messages = json.loads(text)
        except ValueError:
            messages = None
        if isinstance(messages, str):
            messages = [messages]
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            self.close_with(1008, "SockJS frames are JSON arrays of strings")
            return
        for message in messages:
            if not self.open:
                return
            self.on_message(message)

    def send_sockjs(self, payload: bytes) -> None:
        """One SockJS frame (``o``, ``a[...]``, ``c[...]``) as a WebSocket message."""
        SubscriberProtocol.send_text(self, payload)

    def send_text(self, message: bytes) -> None:
        self.send_sockjs(b"a" + json.dumps([message.decode("utf-8")]).encode("utf-8"))

    def close_with(self, code: int, reason: str) -> None:
        if self.open:
            self.send_sockjs(b"c" + json.dumps([code, reason[:100]]).encode("utf-8"))
        super().close_with(code, reason)
