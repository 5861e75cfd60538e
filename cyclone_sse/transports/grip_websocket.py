"""The GRIP-held WebSocket (``--grip-proxy`` and WebSocket-over-HTTP): a WebSocket client
whose backend speaks plain HTTP.  What the client sends goes to the backend as
``application/websocket-events`` requests, one at a time, the messages that arrived
meanwhile batched into the next; the backend's answers carry messages for the client,
its close, and GRIP control messages (subscribe, unsubscribe, set-meta, keep-alive,
detach).  What is published to the channels it subscribed the client to is written as
Pushpin writes it: an item's ``ws-message`` (after the content filters), its
``action: close``, or a plain event's data as a text message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from zope.interface import implementer

from cyclone_sse.errors import CycloneSSEError
from cyclone_sse.event import Event
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.pushpin import CONTINUED, GripItem
from cyclone_sse.subscription import Subscriber
from cyclone_sse.transports.grip import GripHeld, passes
from cyclone_sse.transports.stream import BoundedWriter
from cyclone_sse.transports.websocket import TOO_BIG, ServerWebSocket, server_frame
from cyclone_sse.websocket_events import (
    CONTENT_TYPE,
    CONTROL_PREFIX,
    MIN_KEEP_ALIVE,
    Control,
    WsEvent,
    close_content,
    decode,
    encode,
    read_close,
    read_control,
)

#: What the handler gives the connection to reach its backend: ``(body, meta)`` →
#: a Deferred of the answer's ``(status, headers by lower-cased name, body)``.
Backend = Callable[[bytes, dict[str, str]], "defer.Deferred[tuple[int, dict[str, str], bytes]]"]

_OPCODES = {"text": 0x1, "binary": 0x2, "ping": 0x9, "pong": 0xA}


def read_answer(status: int, headers: dict[str, str], body: bytes) -> list[WsEvent]:
    """The events of a backend's answer; ValueError says why it is not one."""
    if status != 200:
        raise ValueError(f"the backend answered {status}")
    if headers.get("content-type", "").partition(";")[0].strip().lower() != CONTENT_TYPE:
        raise ValueError(f"the backend's answer is not {CONTENT_TYPE}")
    return decode(body)


#: The frame of the last plain event and of the last item written: the held
#: WebSockets of a channel get the same one in turn, so each is framed once a publish.
_plain: list[Any] = [None, b""]
_item: list[Any] = [None, b""]


def plain_frame(event: Event) -> bytes:
    """A plain event (not a Pushpin item) as a text message of its data."""
    if _plain[0] is not event:
        _plain[:] = [event, server_frame(event.data.encode("utf-8"))]
    return _plain[1]  # type: ignore[no-any-return]


def item_frame(item: GripItem) -> bytes:
    """An item's ``ws-message`` as a text or binary message."""
    if _item[0] is not item:
        assert item.message is not None
        _item[:] = [item, server_frame(item.message, 0x2 if item.binary else 0x1)]
    return _item[1]  # type: ignore[no-any-return]


class GripWebSocket(ServerWebSocket):
    """One WebSocket client held for a WebSocket-over-HTTP backend, after the backend
    accepted it (``OPEN``)."""

    transport: Any  # (a TCP or TLS transport: paused, resumed, aborted)

    def __init__(self, app: Any, backend: Backend, prefix: bytes | None,
                 meta: dict[str, str]) -> None:
        self.app = app
        self.backend = backend
        self.prefix = prefix  # None: GRIP is off, every backend message is the client's
        self.meta = meta
        self.ws = Connection(ConnectionType.SERVER)
        self.open = True  # until a close frame is sent or received
        self.heard = True  # (the keep-alive ping round: WebSockets._ping_round)
        self.wrote = False  # anything written since the last keep-alive round
        self.parts: list[bytes] = []
        self.size = 0
        self.queue: list[WsEvent] = []  # for the backend's next request
        self.queued = 0
        self.asking = False  # a request to the backend is under way
        self.paused = False  # reading from the client, while the queue is full
        self.detached = False  # the backend let go: the client's messages are dropped
        self.told = False  # the backend was sent CLOSE or DISCONNECT: nothing more
        self.every: float | None = None  # Keep-Alive-Interval: the backend's wish
        self._backend_timer: Any = None
        self._client_timer: LoopingCall | None = None
        self.subscribers: dict[str, GripWebSocketSubscriber] = {}
        self.settings = app.settings_obj

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:  # (small answers: see SubscriberProtocol)
            no_delay(True)
        self.out = BoundedWriter(self.transport, self.app.registry.counters,
                                 self.settings.max_pending)
        self.app.websockets.opened(self)  # (pinged with the others)
        self.app.grip_held += 1

    # the client's side ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.open:
            return
        self.heard = True
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                chunk = event.data.encode("utf-8") if isinstance(event, TextMessage) \
                    else bytes(event.data)
                self.size += len(chunk)
                if self.size > self.settings.ws_max_message:
                    self.close_with(1009, TOO_BIG)
                    return
                if not event.message_finished:
                    self.parts.append(chunk)
                    continue
                message = b"".join((*self.parts, chunk)) if self.parts else chunk
                self.parts, self.size = [], 0
                self.to_backend("TEXT" if isinstance(event, TextMessage) else "BINARY",
                                message)
            elif isinstance(event, Ping):
                self.out.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.to_backend("CLOSE", close_content(event.code, event.reason or ""))
                self.told = True
                self.close_with(event.code, event.reason or "")
                return

    def to_backend(self, kind: str, content: bytes | None) -> None:
        """Queue an event for the backend and ask it, unless a request is under way;
        past ``--max-pending`` queued bytes the client is not read until it answers."""
        if self.detached or self.told:
            return
        self.queue.append((kind, content))
        self.queued += len(content or b"")
        if self.queued > self.settings.max_pending and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        if not self.asking:
            self.ask()

    def ask(self) -> None:
        """Send the backend what is queued (nothing: a keep-alive request)."""
        if self._backend_timer is not None and self._backend_timer.active():
            self._backend_timer.cancel()
        self._backend_timer = None
        events, self.queue, self.queued = self.queue, [], 0
        if self.paused and self.open:
            self.paused = False
            self.transport.resumeProducing()
        self.asking = True
        d = self.backend(encode(events), self.meta)
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, answer: tuple[int, dict[str, str], bytes]) -> None:
        self.asking = False
        if not self.open:
            if self.queue and not self.detached:
                self.ask()  # (the CLOSE or DISCONNECT that followed)
            return
        try:
            events = read_answer(*answer)
        except ValueError as exc:
            self.close_with(1011, str(exc))
            return
        self.take(answer[1], events)

    def take(self, headers: dict[str, str], events: list[WsEvent]) -> None:
        """What an answer of the backend's says (after its ``OPEN`` for the first), then
        the next request: what was queued meanwhile, or a keep-alive one later."""
        self.apply(headers, events)
        if self.open and not self.detached:
            if self.queue:
                self.ask()
            elif self.every:
                self._backend_timer = self.app.clock.callLater(self.every, self.ask)

    def _failed(self, failure: Any) -> None:
        self.asking = False
        if self.open:
            self.close_with(1011, "the backend did not answer")

    # the backend's side ---------------------------------------------------------------

    def apply(self, headers: dict[str, str], events: list[WsEvent]) -> None:
        """A backend's answer: its ``Keep-Alive-Interval`` and ``Set-Meta-*`` headers,
        then its events in order."""
        if "keep-alive-interval" in headers:
            try:
                every = int(headers["keep-alive-interval"])
            except ValueError:
                every = 0
            self.every = max(every, MIN_KEEP_ALIVE) if every > 0 else None
        for name, value in headers.items():
            if name.startswith("set-meta-") and len(name) > 9:
                self.set_meta(name[9:], value)
        for kind, content in events:
            if not self.open:
                return
            if kind in ("TEXT", "BINARY"):
                self.from_backend(content or b"", kind == "BINARY")
            elif kind in ("PING", "PONG"):
                self.out.write(server_frame(content or b"", 0x9 if kind == "PING" else 0xA))
            elif kind == "CLOSE":
                code, reason = read_close(content)
                self.told = True  # (the backend's own close: nothing to tell it)
                self.close_with(code or 1000, reason)
            elif kind in ("DISCONNECT", "OPEN"):  # (OPEN again: the backend is lost)
                self.told = True
                self.open = False
                self.transport.abortConnection()

    def from_backend(self, content: bytes, binary: bool) -> None:
        """A message from the backend: a control message, or the client's (with GRIP
        on, only those with the message prefix, which is taken off)."""
        prefix = self.prefix
        if prefix is not None:
            if not binary and content.startswith(CONTROL_PREFIX):
                self.control(content[len(CONTROL_PREFIX):])
                return
            if not content.startswith(prefix):
                return
            content = content[len(prefix):]
        if not binary:
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                return  # (a text message must be UTF-8: a client would fail the socket)
        self.write(server_frame(content, 0x2 if binary else 0x1))

    def control(self, text: bytes) -> None:
        """A GRIP control message; one that cannot be read is skipped, as Pushpin
        skips it."""
        try:
            message = read_control(text)
        except (ValueError, CycloneSSEError):
            return
        if message.type == "subscribe":
            if message.channel not in self.subscribers and \
                    len(self.subscribers) < self.settings.max_channels:
                sub = GripWebSocketSubscriber(self, message.channel, message.filters)
                self.subscribers[message.channel] = sub
                self.app.subscriptions.open(sub, [message.channel], None)
        elif message.type == "unsubscribe":
            gone = self.subscribers.pop(message.channel, None)
            if gone is not None:
                self.app.subscriptions.close(gone)
        elif message.type == "set-meta":
            self.set_meta(message.name, message.value)
        elif message.type == "keep-alive":
            self.keep_alive(message)
        elif message.type == "detach":
            self.detached = True
            self.queue, self.queued = [], 0

    def set_meta(self, name: str, value: str) -> None:
        """A connection value the backend gets back as ``Meta-<name>`` (empty: none)."""
        if value:
            if len(self.meta) < 64 or name in self.meta:
                self.meta[name] = value
        else:
            self.meta.pop(name, None)

    def keep_alive(self, message: Control) -> None:
        """Write ``message``'s content when the client was sent nothing for its timeout
        (``mode: interval``: every timeout); no content: no keep-alive."""
        if self._client_timer is not None and self._client_timer.running:
            self._client_timer.stop()
        self._client_timer = None
        if message.content is None:
            return
        frame = server_frame(message.content, _OPCODES[message.kind])
        every = message.mode == "interval"
        self._client_timer = LoopingCall(self._idle, frame, every)
        self._client_timer.clock = self.app.clock
        self._client_timer.start(message.timeout, now=False)

    def _idle(self, frame: bytes, every: bool) -> None:
        if self.open and (every or not self.wrote):
            self.out.write(frame)
        self.wrote = False

    # published events -----------------------------------------------------------------

    def published(self, event: Event, filters: frozenset[str]) -> None:
        """An event of a channel the backend subscribed this client to."""
        item = event.grip
        if item is None:
            self.write(plain_frame(event))
        elif item is not CONTINUED and passes(item, filters, self.meta,
                                              list(self.subscribers)):
            if item.ws_close is not None:
                self.close_with(*item.ws_close)
            elif item.message is not None:
                self.write(item_frame(item))

    def write(self, frame: bytes) -> None:
        if self.open and not self.out.closed:
            self.wrote = True
            self.out.write(frame)

    # ending ---------------------------------------------------------------------------

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.app.websockets.closed(self)
        self.app.grip_held -= 1
        for sub in self.subscribers.values():
            self.app.subscriptions.close(sub)
        self.subscribers = {}
        if self._client_timer is not None and self._client_timer.running:
            self._client_timer.stop()
        if self._backend_timer is not None and self._backend_timer.active():
            self._backend_timer.cancel()
        if not self.told and not self.detached:  # (gone without a close: say so)
            self.told = True
            self.queue, self.queued = [("DISCONNECT", None)], 0
            if not self.asking:
                self.ask()


@implementer(ISubscriber)
class GripWebSocketSubscriber(Subscriber, GripHeld):
    """One channel a backend subscribed its WebSocket client to."""

    def __init__(self, protocol: GripWebSocket, channel: str,
                 filters: frozenset[str]) -> None:
        super().__init__()
        self.protocol = protocol
        self.channel = channel
        self.filters = filters
        self.closed = False

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if self.closed:
            return
        if not self.live:
            if not self.hold(events):
                self.protocol.out._overflow()
            return
        rest = self.unseen(events)
        for event in events if rest is None else rest:
            self.protocol.published(event, self.filters)

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        for event in self.release(replay, last_id):  # (the ones held meanwhile)
            self.protocol.published(event, self.filters)

    def close_for(self, channel: str, item: GripItem) -> None:
        if not self.closed and self.live and item.ws_close is not None and passes(
                item, self.filters, self.protocol.meta, list(self.protocol.subscribers)):
            self.protocol.close_with(*item.ws_close)

    def heartbeat(self) -> None:
        pass  # (the WebSocket ping round, and the backend's keep-alive)

    def close(self) -> None:
        self.protocol.close_with(1001, "the daemon is stopping")

    def disconnected(self) -> None:
        self.closed = True
