"""The WebSocket transport (RFC 6455): a connection on the subscribe URL that speaks a
small JSON protocol.  Each event is framed once, as an unmasked text frame, and the
same bytes are written to every subscriber.

wsproto (python-hyper's sans-I/O implementation) parses what clients send: masking,
opcodes, UTF-8, fragments, control frames and the close handshake.  It holds ~2 KB per
connection where Autobahn's Twisted protocol held ~9 KB; what the daemon sends, it frames
itself (``text_frame``), so fan-out never goes through a library.

Client to daemon (``id`` is the client's, echoed in the answer)::

    {"type": "subscribe", "id": 1, "channels": ["a", "news.*"], "lastEventId": "…",
     "token": "…"}
    {"type": "unsubscribe", "id": 2, "channels": ["a"]}
    {"type": "publish", "id": 3, "channel": "chat.1", "data": "…", "event": "…"}
    {"type": "presence", "id": 4, "channel": "chat.1"}
    {"type": "ping", "id": 5}

Daemon to client::

    {"type": "subscribed", "id": 1, "channels": […], "lastEventId": "…", "client": "…"}
    {"type": "gap", "reason": "expired", "lastEventId": "…"}   (replay not complete)
    {"type": "event", "channel": "a", "id": "…", "event": "message", "data": "…"}
    {"type": "unsubscribed", "id": 2, "channels": ["a"]}
    {"type": "published", "id": 3, "channel": "chat.1", "eventId": "…", "subscribers": 2}
    {"type": "presence", "id": 4, "channel": "chat.1", "clients": [{"client", "user"}…]}
    {"type": "join" | "leave", "channel": "chat.1", "client": "…", "user": "…"}
    {"type": "token-expired", "channels": […], "lastEventId": "…"}
    {"type": "pong", "id": 5}
    {"type": "error", "id": 1, "code": 403, "reason": "…"}

Close codes: 1008 (a message that is not a JSON object), 1009 (a message over
``--ws-max-message``), 1007 (invalid UTF-8), 1003 (a binary message), 1002 (protocol
error: an unmasked frame, an unknown opcode, a bad control frame), 1001 (the daemon
stops), 1011 (no answer to two pings in a row: the peer is gone).  A client too slow to
read is dropped like a slow SSE stream (no close frame gets through a full buffer).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import struct
import zlib
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import generate_accept_token
from zope.interface import implementer

from cyclone_sse.channels import compile_pattern, is_pattern, split_channels
from cyclone_sse.checks import check_message, loads
from cyclone_sse.errors import (
    BadRequest,
    Conflict,
    CycloneSSEError,
    Forbidden,
    NotFound,
    TooDeep,
    TooManyRequests,
    UpgradeRequired,
)
from cyclone_sse.event import Event, as_data, joined
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.limits import TokenBucket
from cyclone_sse.session import Access, Credentials, admit, enter
from cyclone_sse.subscription import Subscriber
from cyclone_sse.transports.stream import BoundedWriter

log = Logger()

#: The reason of a 1009 close: a message (inflated or not) over the limit.
TOO_BIG = "message too big (--ws-max-message)"
#: A ping with no payload: what the keep-alive round sends every ``--ws-ping`` seconds.
PING_FRAME = b"\x89\x00"
#: What a connection asks about while no subscription is being authorized.
NOTHING: frozenset[str] = frozenset()


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate (RFC 7692) whose inflate stops at ``limit`` bytes per message.

    wsproto inflates whatever a frame holds (58 KB of zeros become 60 MB) and the size
    check could only come after.  Here each piece is inflated with ``max_length`` set
    to what the message may still grow by, plus one byte: a message that would pass
    the limit is refused with 1009 before more than ``limit + 1`` bytes were produced,
    so a connection never holds more than one message's worth of inflated text.
    (Overrides the two inflating hooks of wsproto's ``Extension`` API, reading the
    state wsproto's own ``PerMessageDeflate`` keeps in ``_decompressor``,
    ``_inbound_compressed`` and ``_inbound_is_compressible``: there is no public way
    to bound its inflate.  tests/test_quality.py checks those names.)"""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.inflated = 0  # bytes of the message being received, so far

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        try:
            out = decompressor.decompress(data, self.limit - self.inflated + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if self.inflated > self.limit or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            return super().frame_inbound_complete(proto, fin)
        # the end of a compressed message: the empty block RFC 7692 7.2.2 strips
        out = self._inflate(b"\x00\x00\xff\xff")
        self.inflated = 0
        if isinstance(out, CloseReason):
            return out
        if self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return out


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, unmasked frame (RFC 6455 section 5.2): what a server sends; a text
    frame unless ``opcode`` says otherwise (0x2 binary, 0x9 ping, 0xA pong)."""
    first, size = 0x80 | opcode, len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame: what the daemon sends its WebSocket clients."""
    return server_frame(payload)


def event_message(event: Event, position: str | None = None) -> bytes:
    """An event as the protocol's JSON text; its id is ``position`` when given."""
    return json.dumps({"type": "event", "channel": event.channel,
                       "id": event.id if position is None else position,
                       "event": event.name or "message", "data": event.data},
                      ensure_ascii=False).encode("utf-8")


def event_frame(event: Event) -> bytes:
    """The event's frame, built once and kept on the event for every subscriber."""
    frame = event.ws
    if frame is None:
        frame = event.ws = text_frame(event_message(event))
    return frame  # type: ignore[no-any-return]


def _json(message: dict[str, object]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


@implementer(ISubscriber)
class WebSocketSubscriber(Subscriber):
    """One subscription of a WebSocket connection (a connection may hold several),
    writing through the connection's one ``BoundedWriter``."""

    def __init__(self, protocol: SubscriberProtocol, request_id: object,
                 channels: list[str], user: str | None) -> None:
        super().__init__()
        self.protocol = protocol
        self.out: BoundedWriter = protocol.out
        self.request_id = request_id
        self.channels = channels
        self.user = user
        self.closed = False
        self.presence: list[str] = []  # presence channels joined once live
        self.expiry: Any = None  # the timer that ends it when its token expires
        self._matchers = [compile_pattern(c) for c in channels if is_pattern(c)]

    def narrow(self, gone: set[str]) -> None:
        """Some of its channels were unsubscribed: the rest stay."""
        self.channels = [c for c in self.channels if c not in gone]
        self.presence = [c for c in self.presence if c not in gone]
        self._matchers = [compile_pattern(c) for c in self.channels if is_pattern(c)]

    def reaches(self, channel: str) -> bool:
        """Whether events of ``channel`` come through this subscription."""
        if channel in self.channels:
            return True
        return any(m.match(channel) for m in self._matchers) and (
            self.access is None or self.access.may_read(channel))

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if self.closed:
            return
        if not self.live:
            if not self.hold(events):
                self.out._overflow()
            return
        rest = self.unseen(events)
        if rest is None:
            self.send_events(events, batch=True)
        elif rest:
            self.send_events(rest)

    def send_events(self, events: list[Event], batch: bool = False) -> None:
        """Write events as frames: the shared bytes (joined once per fan-out ``batch``),
        or compressed for this connection alone when it negotiated permessage-deflate."""
        protocol = self.protocol
        if not protocol.open or self.out.closed:
            return
        if self.sharded:  # each id is this stream's own position (Subscriber.ids_for)
            for event, position in zip(events, self.ids_for(events), strict=True):
                protocol.send_text(event_message(event, position))
        elif protocol.framed_alone:
            for event in events:
                protocol.send_event(event)
        elif len(events) == 1:
            self.out.write(event_frame(events[0]))
        else:
            self.out.write(joined(events, event_frame) if batch
                           else b"".join(map(event_frame, events)))

    def push(self, message: bytes) -> None:
        """A message that is not an event (join, leave)."""
        if not self.closed and self.live:
            self.protocol.send_text(message)

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        protocol = self.protocol
        events = self.release(replay, last_id)
        # The position the client holds once it has this message: its own while a
        # replay follows (each event then moves it), else where this subscription
        # starts (the head, or past a gap with nothing retained).
        protocol.send_json({"type": "subscribed", "id": self.request_id,
                            "channels": self.channels, "client": protocol.client_id,
                            "lastEventId": last_id if events else self.resume_id()})
        if replay.gap:
            protocol.send_json({"type": "gap", "reason": replay.gap, "lastEventId": last_id})
        if events:
            self.send_events(events)
        protocol.went_live(self)

    def expire(self) -> None:
        """The token expired: say so, with where to resume, and end this subscription
        (the connection stays: the client subscribes again with a fresh token)."""
        self.expiry = None
        if not self.closed:
            self.protocol.send_json({"type": "token-expired", "channels": self.channels,
                                     "lastEventId": self.resume_id()})
            self.protocol.end(self)

    def heartbeat(self) -> None:
        pass  # the keep-alive round (WebSockets._ping_round) pings every connection

    def close(self) -> None:
        """The daemon stops: close the whole connection with 1001 (going away)."""
        self.protocol.close_with(1001, "the daemon is stopping")

    def disconnected(self) -> None:
        self.closed = True
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None


class ServerWebSocket(Protocol):
    """What every server-side WebSocket connection of the daemon has: its wsproto
    ``ws``, its ``BoundedWriter`` ``out``, whether it is ``open``, and its close."""

    #: What the keep-alive round writes to it.
    keep_alive_frame = PING_FRAME

    ws: Connection
    out: BoundedWriter
    open: bool

    def close_with(self, code: int, reason: str) -> None:
        """Send a close frame (or answer the client's) and close the connection once it
        is written: no frame is read after it."""
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self.out.write(self.ws.send(CloseConnection(code, reason[:100])))
        self.open = False
        transport: Any = self.transport
        if transport is not None:
            transport.unregisterProducer()
            transport.loseConnection()


class SubscriberProtocol(ServerWebSocket):
    """One WebSocket client, after the handshake: its frames (through wsproto), its JSON
    messages, its subscriptions, publishes and presence questions."""

    #: Whether it frames WebSocket messages (a SockJS session over HTTP does not: no
    #: wsproto connection, ~1.7 KB, is made for it).
    websocket_framing = True

    def __init__(self, hub: WebSockets, extensions: list[Extension], remote_ip: str,
                 query_token: str | None, cookies: str | None, hook: Any) -> None:
        self.hub = hub
        self.app = hub.app
        if self.websocket_framing:
            self.ws = Connection(ConnectionType.SERVER, extensions)
        self.deflate = bool(extensions)
        # each event framed for this connection alone (compressed with its own context,
        # or inside a SockJS frame), not the frame shared by every subscriber
        self.framed_alone = self.deflate
        self.remote_ip = remote_ip
        self.query_token = query_token
        self.cookies = cookies
        self.hook = hook  # the upgrading handler, when an --app hooks channels or authorize
        self.open = True  # until a close frame is sent or received
        self.heard = True  # anything received since the last keep-alive ping
        self.parts: list[str] = []  # a fragmented message, so far
        self.size = 0
        self.subscriptions: list[WebSocketSubscriber] = []
        # channels of subscriptions being authorized (a new frozenset each time: an
        # empty set() held by every connection costs 216 bytes)
        self.asking: frozenset[str] = NOTHING
        self.client_id = secrets.token_hex(8)
        rate = self.app.settings_obj.ws_publish_rate
        self.publishes = TokenBucket(self.app.clock, rate, 2 * rate) if rate else None

    def connectionMade(self) -> None:
        # Answers to a client's requests are small writes; with Nagle's algorithm on, one
        # written while the previous is unacknowledged waits for the client's delayed
        # ACK (~40 ms): a publishing client would get ~700 answers a second.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        self.out = BoundedWriter(self.transport, self.app.registry.counters,
                                 self.app.settings_obj.max_pending)
        self.hub.opened(self)

    # frames in and out --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.open:
            return  # closed by either side: the connection is on its way out
        self.heard = True
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.size += len(event.data)
                if self.size > self.app.settings_obj.ws_max_message:
                    self.close_with(1009, TOO_BIG)
                    return
                if not event.message_finished:
                    self.parts.append(event.data)
                    continue
                text = "".join((*self.parts, event.data)) if self.parts else event.data
                self.parts, self.size = [], 0
                self.received(text)
            elif isinstance(event, Ping):
                self.out.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                # the client's close (answered in kind), or a frame wsproto refused
                # (answered with the code it chose: 1002, 1007, 1009 past the inflate
                # bound)
                reason = event.reason or ""
                if event.code == 1009:
                    reason = TOO_BIG
                self.close_with(event.code, reason)
                return
            elif isinstance(event, BytesMessage):
                self.close_with(1003, "messages are JSON text, not binary")
                return
            if not self.open:
                return

    def send_event(self, event: Event) -> None:
        """An event framed for this connection alone (compressed: see ``framed_alone``)."""
        self.send_text(event_message(event))

    def received(self, text: str) -> None:
        """A whole text message from the client."""
        self.on_message(text)

    def send_text(self, message: bytes) -> None:
        """One server message (JSON text), framed for this connection."""
        if not self.open or self.out.closed:
            return
        if self.deflate:  # compressed with this connection's own context
            frame = self.ws.send(TextMessage(message.decode("utf-8")))
        else:
            frame = text_frame(message)
        self.out.write(frame)

    def send_json(self, message: dict[str, object]) -> None:
        self.send_text(_json(message))

    def error(self, request_id: object, code: int, reason: str) -> None:
        self.send_json({"type": "error", "id": request_id, "code": code, "reason": reason})

    def on_message(self, text: str) -> None:
        try:
            message = loads(text, "message")
        except TooDeep as exc:
            self.close_with(1008, str(exc))
            return
        except BadRequest:
            message = None
        if not isinstance(message, dict):
            self.close_with(1008, "messages are JSON objects")
            return
        kind, request_id = message.get("type"), message.get("id")
        action = self._actions.get(kind) if isinstance(kind, str) else None
        if action is None:
            self.error(request_id, 400, f"unknown message type {str(kind)[:50]!r}: use "
                                        "subscribe, unsubscribe, publish, presence or ping")
            return
        try:
            action(self, message, request_id)
        except CycloneSSEError as exc:
            self.error(request_id, exc.status, str(exc))

    # subscribe / unsubscribe --------------------------------------------------------

    def subscribe(self, message: dict[str, Any], request_id: object) -> None:
        app = self.app
        handler = self.hook
        names = _names(message, "channels")
        if handler is not None and handler.has_channels_hook():
            channels = handler.channels_named(names)  # (--app's get_channels)
        else:
            channels = split_channels(names, app.settings_obj.max_channels)
        held = self.asking.union(*(s.channels for s in self.subscriptions))
        twice = [c for c in channels if c in held and c in names]
        if twice:
            raise Conflict(f"already subscribed to {twice[0]} on this connection")
        channels = [c for c in channels if c not in held]  # (a hook's: once a connection)
        most = app.settings_obj.ws_max_subscriptions
        if len(self.subscriptions) + bool(self.asking) >= most:
            raise TooManyRequests(f"at most {most} subscriptions per connection "
                                  "(--ws-max-subscriptions)")
        last_id = message.get("lastEventId")
        if last_id is not None and not isinstance(last_id, str):
            raise BadRequest("lastEventId: a string")
        token = message.get("token") if isinstance(message.get("token"), str) else None
        credentials = Credentials(token or self.query_token, self.cookies, None,
                                  self.remote_ip)
        decided = admit(app, credentials, channels, last_id, handler)  # (or raises)
        if isinstance(decided, Access):  # nothing was asked: in place, no Deferred chain
            self._allowed(decided, channels, last_id, request_id)
            return
        self.asking = self.asking.union(channels)
        decided.addBoth(self._asked, channels)
        decided.addCallback(self._allowed, channels, last_id, request_id)
        decided.addErrback(lambda failure: self.error(
            request_id, getattr(failure.value, "status", 500), failure.getErrorMessage()))

    def _asked(self, result: Any, channels: list[str]) -> Any:
        self.asking = self.asking.difference(channels) or NOTHING
        return result

    def _allowed(self, access: Access | None, channels: list[str], last_id: str | None,
                 request_id: object) -> None:
        app = self.app
        if not self.open:
            return
        claims = access.claims if access is not None else None
        sub = self.new_subscriber(request_id, channels,
                                  claims.sub if claims is not None else None)
        self.subscriptions.append(sub)
        sub.expiry, _ = enter(app, sub, channels, last_id, access, sub.expire)

    def new_subscriber(self, request_id: object, channels: list[str],
                       user: str | None) -> WebSocketSubscriber:
        """The subscription a ``subscribe`` request was allowed."""
        return WebSocketSubscriber(self, request_id, channels, user)

    def went_live(self, sub: WebSocketSubscriber) -> None:
        """Join the presence of its ``+presence`` channels (named, not by pattern)."""
        app = self.app
        policies = app.gate.policies
        sub.presence = [c for c in sub.channels
                        if not is_pattern(c) and policies.of(c).presence]
        for channel in sub.presence:
            app.presence.join(channel, self.client_id, sub.user, sub)

    def unsubscribe(self, message: dict[str, Any], request_id: object) -> None:
        names = _names(message, "channels")
        held = {c for s in self.subscriptions for c in s.channels}
        missing = [c for c in names if c not in held]
        if missing or not names:
            raise NotFound(f"not subscribed to {missing[0] if missing else 'anything named'}"
                           " on this connection")
        app = self.app
        gone = set(names)
        for sub in list(self.subscriptions):
            if not gone.intersection(sub.channels):
                continue
            if gone.issuperset(sub.channels):
                self.end(sub)
                continue
            for channel in gone.intersection(sub.presence):
                app.presence.leave(channel, self.client_id, sub)
            sub.narrow(gone)
            app.registry.leave(sub, gone)
        self.send_json({"type": "unsubscribed", "id": request_id,
                        "channels": list(dict.fromkeys(names))})

    def end(self, sub: WebSocketSubscriber) -> None:
        """One subscription is over: out of the registry and the presence lists."""
        app = self.app
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)
        for channel in sub.presence:
            app.presence.leave(channel, self.client_id, sub)
        sub.presence = []
        app.subscriptions.close(sub)

    # publish and presence ------------------------------------------------------------

    def publish(self, message: dict[str, Any], request_id: object) -> None:
        app = self.app
        counters = app.registry.counters
        try:
            channel, data, name = self._publishable(message)
        except CycloneSSEError:
            counters.refused_client_publishes += 1
            raise
        counters.client_publishes += 1
        d = app.broker.publish(channel, data, name, None)
        d.addCallback(lambda published: self.send_json({
            "type": "published", "id": request_id, "channel": channel,
            "eventId": published.id, "subscribers": published.subscribers}))
        d.addErrback(lambda failure: self.error(
            request_id, getattr(failure.value, "status", 500), failure.getErrorMessage()))

    def _publishable(self, message: dict[str, Any]) -> tuple[str, str, str | None]:
        """(channel, data, event name) of a publish this client may make, or the error."""
        if self.publishes is None:
            raise Forbidden("this daemon takes no publishes from clients "
                            "(--ws-publish-rate=0)")
        channel = message.get("channel")
        if not isinstance(channel, str):
            raise BadRequest("channel: a channel name")
        if "data" not in message:
            raise BadRequest("data: missing")
        data = as_data(message["data"])
        name = message.get("event")
        if name is not None and not isinstance(name, str):
            raise BadRequest("event: a string")
        check_message(channel, data, name or None)  # (the checks of every path)
        if not self.app.gate.policies.of(channel).client_publish:
            raise Forbidden(f"channel {channel} takes no publishes from clients (its "
                            "policy has no +publish)", channel)
        if not any(s.live and s.reaches(channel) for s in self.subscriptions):
            raise Forbidden(f"subscribe to {channel} before publishing to it", channel)
        if not self.publishes.take():
            raise TooManyRequests("publishing too fast on this connection "
                                  "(--ws-publish-rate)")
        return channel, data, name or None

    def presence(self, message: dict[str, Any], request_id: object) -> None:
        app = self.app
        channel = message.get("channel")
        if not isinstance(channel, str):
            raise BadRequest("channel: a channel name")
        if not app.gate.policies.of(channel).presence:
            raise Forbidden(f"channel {channel} keeps no presence (its policy has no "
                            "+presence)", channel)
        if not any(s.live and channel in s.channels for s in self.subscriptions):
            raise Forbidden(f"subscribe to {channel} by name to see its presence", channel)
        d = app.presence.who(channel)
        d.addCallback(lambda clients: self.send_json({
            "type": "presence", "id": request_id, "channel": channel, "clients": clients}))
        d.addErrback(lambda failure: self.error(request_id, 503, failure.getErrorMessage()))

    def ping(self, message: dict[str, Any], request_id: object) -> None:
        self.send_json({"type": "pong", "id": request_id})

    _actions = {"subscribe": subscribe, "unsubscribe": unsubscribe, "publish": publish,
                "presence": presence, "ping": ping}

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.hub.closed(self)
        for sub in list(self.subscriptions):
            self.end(sub)


def _names(message: dict[str, Any], field: str) -> list[str]:
    """A list of channel names (or one name) from a message."""
    names = message.get(field)
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise BadRequest(f"{field}: a list of channel names")
    return names


def opening_lines(request: Any) -> list[bytes]:
    """The first lines of the 101 answer to an upgrade ``request`` (RFC 6455 4.2), or
    the error to answer instead (400, 426)."""
    headers = request.headers
    if "upgrade" not in headers.get("Connection", "").lower():
        raise BadRequest("a WebSocket upgrade needs 'Connection: Upgrade'")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise UpgradeRequired("this daemon speaks WebSocket version 13 (RFC 6455)")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise BadRequest("Sec-WebSocket-Key: 16 bytes in base64")
    return [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + generate_accept_token(key.encode("ascii"))]


class WebSockets:
    """The application's WebSocket side: the handshake, the open connections and the
    keep-alive round that pings them (and drops those that stopped answering)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.connections: set[SubscriberProtocol] = set()
        self._pinging: LoopingCall | None = None
        self.dead_peers = 0

    def handshake(self, request: Any) -> tuple[bytes, list[Extension]]:
        """The 101 response to an upgrade ``request`` and the extensions agreed, or the
        error to answer instead (400, 403 for an Origin not allowed, 426)."""
        headers = request.headers
        lines = opening_lines(request)
        origin = headers.get("Origin")
        if origin and self.app.allowed_origin(origin) is None:
            raise Forbidden("this Origin may not connect (--cors-origin)")
        extensions: list[Extension] = []
        offered = headers.get("Sec-WebSocket-Extensions")
        settings = self.app.settings_obj
        if offered and settings.ws_deflate:
            deflate = BoundedDeflate(settings.ws_max_message)
            try:
                agreed = server_extensions_handshake(offered.split(","), [deflate])
            except ValueError:  # (wsproto reads window bits with int())
                agreed = None  # an offer we cannot read is declined (RFC 7692 5.1)
            if agreed:
                lines.append(b"Sec-WebSocket-Extensions: " + agreed)
                extensions.append(deflate)
        return b"\r\n".join(lines) + b"\r\n\r\n", extensions

    def opened(self, connection: SubscriberProtocol) -> None:
        self.connections.add(connection)
        interval = self.app.settings_obj.ws_ping
        if interval and self._pinging is None:
            self._pinging = LoopingCall(self._ping_round)
            self._pinging.clock = self.app.clock
            self._pinging.start(interval, now=False)

    def closed(self, connection: SubscriberProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections and self._pinging is not None:
            self._pinging.stop()
            self._pinging = None

    def _ping_round(self) -> None:
        """Ping every connection that said something since the last round; close the
        others (two intervals without a word, not even a pong: the peer is gone)."""
        for connection in list(self.connections):
            if not connection.open:
                continue
            if connection.heard:
                connection.heard = False
                connection.out.write(connection.keep_alive_frame)
            else:
                self.dead_peers += 1
                connection.close_with(1011, "no answer to ping")
