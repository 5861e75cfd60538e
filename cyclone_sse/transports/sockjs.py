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
from cyclone_sse.transports.websocket import (
    PING_FRAME,
    SubscriberProtocol,
    WebSocketSubscriber,
    event_message,
    text_frame,
)

#: The request id of a session's subscription to the default channels.
DEFAULTS = "sockjs-defaults"
#: The last event's data as a message (JSON text), and that in an ``a[...]`` WebSocket
#: frame: the sessions of a channel get the same one in turn, so it is made once a
#: publish.
_last: list[Any] = [None, b"", b""]


def data_json(event: Event) -> tuple[bytes, bytes]:
    """The event's data as a SockJS message (a JSON string), and ``a["<data>"]`` in a
    WebSocket text frame."""
    if _last[0] is not event:
        text = json.dumps(event.data).encode("utf-8")
        _last[:] = [event, text, text_frame(b"a[" + text + b"]")]
    return _last[1], _last[2]


#: The last event as the WebSocket protocol's message, in JSON text (a SockJS message),
#: and that in an ``a[...]`` WebSocket frame: made once a publish for every session.
_message: list[Any] = [None, b"", b""]


def event_json(event: Event) -> tuple[bytes, bytes]:
    """The event's protocol message as a JSON string, and that as a SockJS frame in a
    WebSocket text frame."""
    if _message[0] is not event:
        text = json.dumps(event_message(event).decode("utf-8")).encode("utf-8")
        _message[:] = [event, text, text_frame(b"a[" + text + b"]")]
    return _message[1], _message[2]


class DataSubscriber(WebSocketSubscriber):
    """A session's subscription to the default channels: each event's data as one
    message, nothing else (no ``subscribed``, no ids)."""

    def send_events(self, events: list[Event], batch: bool = False) -> None:
        protocol = self.protocol
        if not protocol.open or self.out.closed:
            return
        sockjs: SockJSProtocol = protocol  # type: ignore[assignment]
        for event in events:
            sockjs.send_data(event)

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

    #: The keep-alive round's ping, and SockJS's own heartbeat frame (``h``).
    keep_alive_frame = PING_FRAME + text_frame(b"h")

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
        self.subscribe_defaults()

    def subscribe_defaults(self) -> None:
        """Subscribe the session to ``--sockjs-channels`` (a refusal is its error
        message)."""
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

    def send_event(self, event: Event) -> None:
        if self.deflate:
            super().send_event(event)
        elif not self.out.closed:
            self.out.write(event_json(event)[1])

    def send_data(self, event: Event) -> None:
        """An event of the default channels: its data as one message."""
        if self.deflate:  # (compressed with this connection's own context)
            self.send_sockjs(b"a" + json.dumps([event.data]).encode("utf-8"))
        elif not self.out.closed:
            self.out.write(data_json(event)[1])

    def close_with(self, code: int, reason: str) -> None:
        if self.open:
            self.send_sockjs(b"c" + json.dumps([code, reason[:100]]).encode("utf-8"))
        super().close_with(code, reason)


#: Seconds a session lives without a request to carry its frames (SockJS's default).
DISCONNECT_DELAY = 5.0
#: Seconds between ``h`` frames to a session's receiver (SockJS's default).
HEARTBEAT = 25.0
#: The close frame a second receiver of a session gets.
ANOTHER = b'c[2010,"Another connection still open"]'


class Receiver:
    """A request that carries a session's frames to the client: ``send(frame)`` says
    whether it takes more (a streaming one, until its limit) or not (a poll)."""

    def send(self, frame: bytes) -> bool:
        raise NotImplementedError


class SessionOutput:
    """What a session's subscriptions see as its output: its bound, and its end."""

    def __init__(self, session: SockJSSession) -> None:
        self.session = session
        self.closed = False

    def write(self, data: bytes) -> None:
        raise AssertionError("a session's frames go through send_text and send_data")

    def _overflow(self) -> None:
        self.session.app.registry.counters.slow_disconnects += 1
        self.session.close_with(1009, "too much waiting for the client (--max-pending)")


class SockJSSession(SockJSProtocol):
    """A SockJS session over the HTTP transports (xhr, xhr_streaming, eventsource): it
    outlives its requests.  Messages wait in the session (at most ``--max-pending``
    bytes) until a receiver takes them; without one for ``DISCONNECT_DELAY`` seconds the
    session ends; a receiver that waits gets ``h`` every ``HEARTBEAT`` seconds."""

    def __init__(self, hub: Any, remote_ip: str, query_token: str | None,
                 cookies: str | None, channels: list[str], sessions: dict[str, Any],
                 key: str) -> None:
        super().__init__(hub, [], remote_ip, query_token, cookies, None, channels=channels)
        self.sessions, self.key = sessions, key
        self.out = SessionOutput(self)  # type: ignore[assignment]
        self.control: bytes | None = b"o"  # the next frame that is not messages
        self.pending: list[bytes] = []  # messages (each JSON text) for the next a[...]
        self.queued_bytes = 0
        self.receiver: Receiver | None = None
        self.clock = hub.app.clock
        self._gone = self.clock.callLater(DISCONNECT_DELAY, self.timed_out)
        self._beat: Any = None
        sessions[key] = self
        self.subscribe_defaults()

    # frames out -------------------------------------------------------------------------

    def send_text(self, message: bytes) -> None:
        self.queue(json.dumps(message.decode("utf-8")).encode("utf-8"))

    def send_data(self, event: Event) -> None:
        self.queue(data_json(event)[0])

    def send_event(self, event: Event) -> None:
        self.queue(event_json(event)[0])

    def queue(self, message: bytes) -> None:
        if not self.open:
            return
        self.pending.append(message)
        self.queued_bytes += len(message)
        if self.queued_bytes > self.app.settings_obj.max_pending:
            self.out._overflow()
            return
        self.flush()

    def next_frame(self) -> bytes | None:
        """The next frame for the client, taken from the session."""
        if self.control is not None:
            frame, self.control = self.control, None
            return frame
        if self.pending:
            frame = b"a[" + b",".join(self.pending) + b"]"
            self.pending, self.queued_bytes = [], 0
            return frame
        return None

    def flush(self) -> None:
        while self.receiver is not None:
            frame = self.next_frame()
            if frame is None:
                return
            if not self.receiver.send(frame):
                self.detach(self.receiver)

    # receivers --------------------------------------------------------------------------

    def attach(self, receiver: Receiver) -> None:
        """A request that will carry frames (a second one at once gets 2010)."""
        if self.receiver is not None:
            receiver.send(ANOTHER)
            return
        if not self.open and self.control is None:
            receiver.send(b'c[3000,"Go away!"]')
            return
        self.receiver = receiver
        if self._gone is not None and self._gone.active():
            self._gone.cancel()
        self._gone = None
        self._beat = self.clock.callLater(HEARTBEAT, self.heartbeat_frame)
        self.flush()

    def detach(self, receiver: Receiver) -> None:
        """The request is done (answered, at its limit, or its client left)."""
        if self.receiver is not receiver:
            return
        self.receiver = None
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        if not self.open:
            self.ended()
        elif self._gone is None:
            self._gone = self.clock.callLater(DISCONNECT_DELAY, self.timed_out)

    def heartbeat_frame(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            if receiver.send(b"h"):
                self._beat = self.clock.callLater(HEARTBEAT, self.heartbeat_frame)
            else:
                self.detach(receiver)

    # ending -----------------------------------------------------------------------------

    def timed_out(self) -> None:
        self._gone = None
        self.open = False
        self.ended()

    def close_with(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        self.pending, self.queued_bytes = [], 0
        self.control = b"c" + json.dumps([code, reason[:100]]).encode("utf-8")
        self.out.closed = True
        if self.receiver is not None:
            self.flush()
        else:
            self._gone = self._gone or self.clock.callLater(DISCONNECT_DELAY,
                                                           self.timed_out)

    def ended(self) -> None:
        """Forget the session and end its subscriptions."""
        if self.sessions.get(self.key) is self:
            del self.sessions[self.key]
        self.connectionLost()
