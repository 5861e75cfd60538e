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
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import LoopingCall

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

#: Bytes an xhr_streaming, eventsource or htmlfile request carries before it ends (the
#: client then makes the next one): SockJS's default, bounding what a browser buffers.
STREAM_LIMIT = 128 * 1024
#: What the ``close`` test service says (the protocol's suite expects these words).
GO_AWAY = (3000, "Go away!")


#: The test services of ``--sockjs-test-services``: (prefix, kind, websocket, cookie).
TEST_SERVICES = (("/echo", "echo", True, False), ("/close", "close", True, False),
                 ("/disabled_websocket_echo", "echo", False, False),
                 ("/cookie_needed_echo", "echo", True, True))
#: Their streaming limit, as sockjs-node's test server has it (the suite counts on it).
TEST_STREAM_LIMIT = 4096


def close_frame(code: int, reason: str) -> bytes:
    """``c[code,"reason"]`` (compact: the protocol's suite compares bytes)."""
    return b"c" + json.dumps([code, reason[:100]], separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class SockJSService:
    """One SockJS endpoint: its ``prefix``, what its sessions do (``daemon``: the
    daemon's WebSocket protocol and ``channels``; ``echo`` and ``close``: the protocol
    suite's test services), whether it offers WebSockets, whether it sets the
    ``JSESSIONID`` cookie load balancers stick sessions by, and its streaming limit."""

    prefix: str
    kind: str = "daemon"
    channels: tuple[str, ...] = ()
    websocket: bool = True
    cookie_needed: bool = False
    stream_limit: int = STREAM_LIMIT


#: How a session closes when the token of its default channels expires.
TOKEN_EXPIRED = (4001, "token expired: open a session with a fresh one")
#: The request id of a session's subscription to the default channels.
DEFAULTS = "sockjs-defaults"
class PerEvent:
    """Bytes made once per event for every session, not once per session: kept for the
    last ``SIZE`` events (the events of one fan-out batch come in turn to each session,
    so one slot would be made again and again)."""

    SIZE = 64

    def __init__(self, make: Any) -> None:
        self.make = make
        self.made: dict[int, tuple[Event, Any]] = {}

    def __call__(self, event: Event) -> Any:
        found = self.made.get(id(event))
        if found is not None and found[0] is event:
            return found[1]
        if len(self.made) >= self.SIZE:
            self.made.clear()
        value = self.make(event)
        self.made[id(event)] = (event, value)
        return value


def _data_json(event: Event) -> tuple[bytes, bytes]:
    text = json.dumps(event.data).encode("utf-8")
    return text, text_frame(b"a[" + text + b"]")


#: The event's data as a SockJS message (a JSON string), and ``a["<data>"]`` in a
#: WebSocket text frame.
data_json = PerEvent(_data_json)


def stream_bytes(kind: str, frame: bytes, chunked: bool) -> tuple[bytes, int]:
    """A frame as an HTTP stream of ``kind`` carries it (in an HTTP/1.1 chunk when
    ``chunked``), and its size without the chunk's own framing (what counts towards the
    stream's limit)."""
    if kind == "eventsource":
        data = b"data: " + frame + b"\r\n\r\n"
    elif kind == "htmlfile":
        data = b"<script>\np(" + json.dumps(frame.decode()).encode() + b");\n</script>\r\n"
    else:
        data = frame + b"\n"
    return in_chunk(data, chunked), len(data)


def in_chunk(data: bytes, chunked: bool) -> bytes:
    """``data`` as one HTTP/1.1 chunk when ``chunked`` (else as it is)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data


#: The kinds of HTTP stream, each in a chunk or not: a stream's ``shape`` is its index.
SHAPES = tuple((kind, chunked) for kind in ("xhr_streaming", "eventsource", "htmlfile")
               for chunked in (False, True))


def _streamed(event: Event) -> list[tuple[bytes, int] | None]:
    return [None] * len(SHAPES)


#: The event's data as each shape of HTTP stream carries it, made when first asked.
_streamed_shapes = PerEvent(_streamed)


def streamed_data(event: Event, shape: int) -> tuple[bytes, int]:
    """``a["<data>"]`` of the event as a stream of ``shape`` carries it (framed as
    ``stream_bytes`` frames it), and its size: made once per event and shape."""
    shapes = _streamed_shapes(event)
    found: tuple[bytes, int] | None = shapes[shape]
    if found is None:
        kind, chunked = SHAPES[shape]
        found = shapes[shape] = stream_bytes(
            kind, b"a[" + data_json(event)[0] + b"]", chunked)
    return found


def _event_json(event: Event) -> tuple[bytes, bytes]:
    text = json.dumps(event_message(event).decode("utf-8")).encode("utf-8")
    return text, text_frame(b"a[" + text + b"]")


#: The event's protocol message as a JSON string (a SockJS message), and that as a
#: SockJS frame in a WebSocket text frame.
event_json = PerEvent(_event_json)


class DataSubscriber(WebSocketSubscriber):
    """A session's subscription to the default channels: each event's data as one
    message, nothing else (no ``subscribed``, no ids)."""

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if len(events) == 1 and self.live and not self.closed and \
                self.unseen(events) is None:  # (the hot path)
            self.protocol.send_data(events[0])  # type: ignore[attr-defined]
        else:
            super().deliver(events, frame)

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
        """The token expired: a page that only listens cannot renew it inside the
        session, so the session closes (``TOKEN_EXPIRED``) and the page opens another
        with a fresh token."""
        self.expiry = None
        if not self.closed:
            self.protocol.close_with(*TOKEN_EXPIRED)


class SockJSProtocol(SubscriberProtocol):
    """One SockJS session over a WebSocket."""

    #: The keep-alive round's ping, and SockJS's own heartbeat frame (``h``).
    keep_alive_frame = PING_FRAME + text_frame(b"h")

    def __init__(self, *args: Any, service: SockJSService) -> None:
        super().__init__(*args)
        self.service = service
        self.framed_alone = True  # (each JSON message inside this session's a[...] frame)

    def new_subscriber(self, request_id: object, channels: list[str],
                       user: str | None) -> WebSocketSubscriber:
        kind = DataSubscriber if request_id == DEFAULTS else WebSocketSubscriber
        return kind(self, request_id, channels, user)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.send_sockjs(b"o")
        self.opened()

    def opened(self) -> None:
        """The session is open: subscribe it to ``--sockjs-channels`` (a refusal is its
        error message), or, for the ``close`` test service, close it."""
        if self.service.kind == "close":
            self.close_with(*GO_AWAY)
        elif self.service.channels:
            try:
                self.subscribe({"channels": list(self.service.channels)}, DEFAULTS)
            except CycloneSSEError as exc:
                self.error(DEFAULTS, exc.status, str(exc))

    def on_message(self, text: str) -> None:
        if self.service.kind == "echo":
            self.send_string(text)
        else:
            super().on_message(text)

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
        self.send_string(message.decode("utf-8"))

    def send_string(self, text: str) -> None:
        """One message to the client (any string: JSON escapes what is not UTF-8)."""
        self.send_sockjs(b"a[" + json.dumps(text).encode("ascii") + b"]")

    def send_event(self, event: Event) -> None:
        if self.deflate:
            super().send_event(event)
        elif not self.out.closed:
            self.out.write(event_json(event)[1])

    def send_data(self, event: Event) -> None:
        """An event of the default channels: its data as one message."""
        if not self.open:
            return
        if self.deflate:  # (compressed with this connection's own context)
            self.send_sockjs(b"a" + json.dumps([event.data]).encode("utf-8"))
        elif not self.out.closed:
            self.out.write(data_json(event)[1])

    def close_with(self, code: int, reason: str) -> None:
        if self.open:
            self.send_sockjs(close_frame(code, reason))
        super().close_with(code, reason)


class RawTestWebSocket(SubscriberProtocol):
    """``<prefix>/websocket`` of the ``echo`` and ``close`` test services: each message
    sent back as it came, or the connection closed at once."""

    def __init__(self, *args: Any, service: SockJSService) -> None:
        super().__init__(*args)
        self.service = service

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.service.kind == "close":
            self.close_with(*GO_AWAY)

    def received(self, text: str) -> None:
        self.send_text(text.encode("utf-8"))


#: Seconds a session lives without a request to carry its frames (SockJS's default), and
#: a closed session keeps answering its close frame.
DISCONNECT_DELAY = 5.0
#: Seconds between ``h`` frames to a session's receiver (SockJS's default).
HEARTBEAT = 25.0
#: The close frame a second receiver of a session gets.
ANOTHER = close_frame(2010, "Another connection still open")
#: Why a session whose receiving request was cut by the network ends (SockJS's words).
INTERRUPTED = (1002, "Connection interrupted")


class Receiver:
    """A request that carries a session's frames to the client (its ``kind``: xhr,
    jsonp, xhr_streaming, eventsource, htmlfile): ``send(frame)`` says whether it takes
    more (a streaming one, until its limit) or not (a poll)."""

    kind = ""
    done = False  # answered, or ended by the daemon: its connection's end is no cut

    def send(self, frame: bytes) -> bool:
        raise NotImplementedError

    def send_data(self, event: Event) -> bool | None:
        """An event of the default channels straight to the client, as every session
        of this kind gets it (None: this receiver cannot, the session frames it)."""
        return None


class SessionOutput:
    """What a session's subscriptions see as its output: its bound, and its end."""

    def __init__(self, session: SockJSSession) -> None:
        self.session = session
        self.closed = False

    def write(self, data: bytes) -> None:
        raise AssertionError("a session's frames go through send_string and send_data")

    def _overflow(self) -> None:
        self.session.app.registry.counters.slow_disconnects += 1
        self.session.close_with(1009, "too much waiting for the client (--max-pending)")


class Sessions(dict[str, "SockJSSession"]):
    """The application's SockJS sessions over HTTP, by prefix and id, and their one
    heartbeat round: every ``HEARTBEAT`` seconds each receiver that waits gets ``h`` (one
    timer for all, not one per session in the reactor's heap)."""

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self._round: LoopingCall | None = None

    def add(self, key: str, session: SockJSSession) -> None:
        self[key] = session
        if self._round is None:
            self._round = LoopingCall(self._heartbeats)
            self._round.clock = self.clock
            self._round.start(HEARTBEAT, now=False)

    def remove(self, key: str, session: SockJSSession) -> None:
        if self.get(key) is session:
            del self[key]
        if not self and self._round is not None:
            self._round.stop()
            self._round = None

    def _heartbeats(self) -> None:
        for session in list(self.values()):
            session.heartbeat_frame()


class SockJSSession(SockJSProtocol):
    """A SockJS session over the HTTP transports: it outlives its requests.  Messages
    wait in the session (at most ``--max-pending`` bytes) until a receiver takes them;
    without one for ``DISCONNECT_DELAY`` seconds the session ends; a receiver that waits
    gets ``h`` with each heartbeat round (``Sessions``); a receiver cut by the network ends the
    session (1002); a closed session answers its close frame until it is forgotten."""

    websocket_framing = False

    def __init__(self, hub: Any, remote_ip: str, query_token: str | None,
                 cookies: str | None, service: SockJSService, sessions: Sessions,
                 key: str) -> None:
        super().__init__(hub, [], remote_ip, query_token, cookies, None, service=service)
        self.sessions, self.key = sessions, key
        self.out = SessionOutput(self)  # type: ignore[assignment]
        self.control: list[bytes] = [b"o"]  # frames to send before any message
        self.pending: list[bytes] = []  # messages (each JSON text) for the next a[...]
        self.queued_bytes = 0
        self.close_frame: bytes | None = None
        self.released = False  # subscriptions ended
        self.receiver: Receiver | None = None
        self.clock = hub.app.clock
        self._gone: Any = self.clock.callLater(DISCONNECT_DELAY, self.forget)
        sessions.add(key, self)
        self.opened()

    # frames out -------------------------------------------------------------------------

    def send_string(self, text: str) -> None:
        self.queue(json.dumps(text).encode("ascii"))

    def send_data(self, event: Event) -> None:
        receiver = self.receiver
        if receiver is not None and self.open and not self.pending and not self.control:
            sent = receiver.send_data(event)  # (the bytes every alike stream gets)
            if sent is not None:
                if not sent:
                    self.detach(receiver)
                return
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
        if self.control:
            return self.control.pop(0)
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
        """A request that will carry frames (a second one at once gets 2010; one after
        the close, the close frame)."""
        if self.receiver is not None:
            receiver.send(ANOTHER)
            return
        if self.close_frame is not None and not self.control:
            receiver.send(self.close_frame)
            return
        self.receiver = receiver
        self._cancel_gone()
        self.flush()

    def detach(self, receiver: Receiver) -> None:
        """The request is done (answered, at its limit, or its client left)."""
        if self.receiver is not receiver:
            return
        self.receiver = None
        self._gone = self.clock.callLater(DISCONNECT_DELAY, self.forget)

    def cut(self, receiver: Receiver) -> None:
        """The receiving request's connection was lost before it was answered."""
        if self.receiver is receiver and not receiver.done:
            self.detach(receiver)
            self.close_with(*INTERRUPTED)

    def heartbeat_frame(self) -> None:
        """``h`` to the receiver that waits, if any (the heartbeat round)."""
        receiver = self.receiver
        if receiver is not None and not receiver.send(b"h"):
            self.detach(receiver)

    # ending -----------------------------------------------------------------------------

    def close_with(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        self.pending, self.queued_bytes = [], 0
        self.close_frame = close_frame(code, reason)
        self.control.append(self.close_frame)
        self.out.closed = True
        # (later: this may run inside a fan-out over the subscriptions it ends)
        self.clock.callLater(0, self.release)
        self.flush()

    def release(self) -> None:
        """End the session's subscriptions (once)."""
        if not self.released:
            self.released = True
            self.connectionLost()

    def forget(self) -> None:
        """No request came in time: the session ends and is forgotten."""
        self._gone = None
        self.open = False
        self.release()
        self.sessions.remove(self.key, self)

    def _cancel_gone(self) -> None:
        if self._gone is not None and self._gone.active():
            self._gone.cancel()
        self._gone = None
