"""AMQP 0-9-1 frames of the hot path, written and read without txamqp's codec.

txamqp builds every frame through its spec-driven ``Codec`` and sends each one through
Deferred queues, a channel lock and a heartbeat reschedule; a publish through RabbitMQ
cost twice a publish through Redis.  Two kinds of frames carry every event: the
``basic.publish`` this daemon sends (``PublishFrames``) and the ``basic.deliver`` it
receives (``DeliveryReader``).  Both are built here with ``struct`` straight from the
0-9-1 wire format; every other frame (connection set-up, bindings, heartbeats, a
channel closed by the server) stays txamqp's.

Unlike txamqp's codec, strings are measured in bytes (a non-ASCII event name made a
frame RabbitMQ refused) and a headers table may hold every field type RabbitMQ and
py-amqp (Celery's kombu) send, not only ``S``, ``I``, ``F`` and ``t``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = 0xCE
_END = bytes((FRAME_END,))
BASIC = 60
BASIC_PUBLISH, BASIC_DELIVER = 40, 60
#: Nested tables or arrays deeper than this make a message rejected, not a recursion.
MAX_TABLE_DEPTH = 16

#: The basic class's properties, from flag bit 15 down, with their types (0-9-1).
PROPERTIES = (
    ("content-type", "shortstr"), ("content-encoding", "shortstr"), ("headers", "table"),
    ("delivery-mode", "octet"), ("priority", "octet"), ("correlation-id", "shortstr"),
    ("reply-to", "shortstr"), ("expiration", "shortstr"), ("message-id", "shortstr"),
    ("timestamp", "longlong"), ("type", "shortstr"), ("user-id", "shortstr"),
    ("app-id", "shortstr"), ("reserved", "shortstr"),  # (0-8: cluster-id)
)
_FLAG_HEADERS, _FLAG_CORRELATION_ID = 1 << 13, 1 << 10
_FLAG_MESSAGE_ID, _FLAG_TYPE = 1 << 7, 1 << 5
BASIC_ACK = 80

_frame_head = struct.Struct("!BHI")
_method_head = struct.Struct("!HHH")   # class, method, reserved-1 (publish)
_content_head = struct.Struct("!HHQH")  # class, weight, body size, property flags
_LONG = struct.Struct("!I")
#: The class and method ids that open a payload of ``basic.deliver``.
_DELIVER = struct.pack("!HH", BASIC, BASIC_DELIVER)
#: Table field types of a fixed size: struct format and size.
_FIXED = {b"t": ("!B", 1), b"b": ("!b", 1), b"B": ("!B", 1), b"s": ("!h", 2),
          b"u": ("!H", 2), b"U": ("!h", 2), b"I": ("!i", 4), b"i": ("!I", 4),
          b"l": ("!q", 8), b"L": ("!q", 8), b"f": ("!f", 4), b"d": ("!d", 8),
          b"T": ("!Q", 8)}


class TooLong(ValueError):
    """A value longer than the AMQP short string that must carry it; ``field`` names
    the publish field it came from."""

    def __init__(self, what: str, field: str) -> None:
        super().__init__(f"{what} longer than 255 bytes cannot travel through AMQP")
        self.field = field


def shortstr(value: str | bytes, what: str, field: str = "") -> bytes:
    """An AMQP short string: one length byte, then at most 255 bytes."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) > 255:
        raise TooLong(what, field)
    return bytes((len(data),)) + data


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _frame_head.pack(kind, channel, len(payload)) + payload + _END


def string_table(values: dict[str, str]) -> bytes:
    """A field table of long strings (``S``), with its length."""
    body = b"".join(shortstr(name, "a header name") + b"S" +
                    _LONG.pack(len(data)) + data
                    for name, data in ((n, v.encode("utf-8")) for n, v in values.items()))
    return _LONG.pack(len(body)) + body


class PublishFrames:
    """``basic.publish`` to one exchange on one channel, with fixed headers: the
    method, content header and body frames of a message, as one ``bytes``."""

    def __init__(self, channel: int, exchange: str, headers: dict[str, str]) -> None:
        self.channel = channel
        self._method = _method_head.pack(BASIC, BASIC_PUBLISH, 0) + shortstr(exchange,
                                                                             "the exchange")
        self.headers = string_table(headers)

    def encode(self, routing_key: str, body: bytes, name: str | None = None,
               message_id: str | None = None, frame_max: int = 0,
               correlation_id: str | None = None) -> bytes:
        """The frames; ``TooLong`` for a key, name or id AMQP cannot carry.
        ``frame_max`` (negotiated at connection tune; 0: none) splits the body."""
        flags, properties = _FLAG_HEADERS, [self.headers]
        if correlation_id:
            flags |= _FLAG_CORRELATION_ID
            properties.append(shortstr(correlation_id, "the correlation id"))
        if message_id:
            flags |= _FLAG_MESSAGE_ID
            properties.append(shortstr(message_id, "the event id", "id"))
        if name:
            flags |= _FLAG_TYPE
            properties.append(shortstr(name, "the event name", "event"))
        channel = self.channel
        key = shortstr(routing_key, "the channel name", "channel")
        parts = [frame(FRAME_METHOD, channel, self._method + key + b"\x00"),
                 frame(FRAME_HEADER, channel,
                       _content_head.pack(BASIC, 0, len(body), flags) + b"".join(properties))]
        step = frame_max - 8 if frame_max > 8 else len(body) or 1
        for start in range(0, len(body), step):
            parts.append(frame(FRAME_BODY, channel, body[start:start + step]))
        return b"".join(parts)


def ack_frame(channel: int, tag: int, multiple: bool = True) -> bytes:
    """``basic.ack`` of delivery ``tag`` (and, ``multiple``, of all before it)."""
    return frame(FRAME_METHOD, channel, struct.pack("!HHQB", BASIC, BASIC_ACK, tag,
                                                    1 if multiple else 0))


class Delivery:
    """One message a consumer received: its routing key, properties and body, or the
    ``problem`` that makes it unreadable; its delivery ``tag`` (what an ack names)."""

    __slots__ = ("body", "problem", "properties", "routing_key", "tag")

    def __init__(self, routing_key: str, properties: dict[str, Any], body: bytes,
                 problem: str | None, tag: int = 0) -> None:
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.problem = problem
        self.tag = tag


class DeliveryReader:
    """Reads the ``basic.deliver`` messages of one channel from whole frames (method,
    content header, body frames) and hands each one to ``on_delivery``; ``take``
    says False for any other frame, which txamqp then reads.  A body longer than
    ``max_body`` is counted, not kept (the message arrives with its ``problem``)."""

    def __init__(self, channel: int, on_delivery: Callable[[Delivery], object],
                 max_body: int) -> None:
        self.channel = channel
        self.on_delivery = on_delivery
        self.max_body = max_body
        self._state = 0  # 0: between messages, 1: awaiting the header, 2: the body
        self._key = ""
        self._tag = 0
        self._properties: dict[str, Any] = {}
        self._problem: str | None = None
        self._parts: list[bytes] = []
        self._left = 0

    def take(self, packet: bytes) -> bool:
        """Read one whole frame (head, payload, frame end) if it is ours."""
        if packet[1] << 8 | packet[2] != self.channel or packet[-1] != FRAME_END:
            return False
        kind, state = packet[0], self._state
        if state == 0:
            if kind != FRAME_METHOD or packet[7:11] != _DELIVER:
                return False
            self._start(packet)
        elif state == 1 and kind == FRAME_HEADER:
            self._header(packet)
        elif state == 2 and kind == FRAME_BODY:
            self._body(packet[7:-1])
        else:  # (a broken sequence: the frame is txamqp's to judge)
            self._state = 0
            return False
        return True

    def _start(self, packet: bytes) -> None:
        at = 11 + 1 + packet[11]  # consumer tag
        self._tag = struct.unpack_from("!Q", packet, at)[0]
        at += 8 + 1  # delivery tag, redelivered
        at += 1 + packet[at]  # exchange
        self._key = packet[at + 1:at + 1 + packet[at]].decode("utf-8", "replace")
        self._state = 1

    def _header(self, packet: bytes) -> None:
        _, _, size, flags = _content_head.unpack_from(packet, 7)
        self._problem, self._parts, self._left = None, [], size
        try:
            self._properties = read_properties(flags, packet, 7 + _content_head.size)
        except (ValueError, IndexError, struct.error) as exc:
            self._properties, self._problem = {}, f"unreadable properties: {exc}"
        if size > self.max_body:
            self._problem = f"larger than --max-body ({self.max_body} bytes)"
        self._state = 2
        if not size:
            self._done()

    def _body(self, chunk: bytes) -> None:
        if self._problem is None:
            self._parts.append(chunk)
        self._left -= len(chunk)
        if self._left <= 0:
            self._done()

    def _done(self) -> None:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._state, self._parts = 0, []
        self.on_delivery(Delivery(self._key, self._properties, body, self._problem,
                                  self._tag))


def read_properties(flags: int, data: bytes, at: int) -> dict[str, Any]:
    """The basic class's properties present in ``flags``, read from ``data`` at ``at``."""
    if flags & 1:
        raise ValueError("more than one property-flags word")
    found: dict[str, Any] = {}
    bit = 1 << 15
    for name, kind in PROPERTIES:
        if flags & bit:
            if kind == "shortstr":
                end = at + 1 + data[at]
                raw = data[at + 1:end]
                found[name], at = _text(raw), end
            elif kind == "table":
                found[name], at = read_table(data, at, 0)
            elif kind == "octet":
                found[name], at = data[at], at + 1
            else:
                found[name], at = struct.unpack_from("!Q", data, at)[0], at + 8
            if at > len(data) - 1:  # (past the payload, into the frame end)
                raise ValueError("properties longer than their frame")
        bit >>= 1
    return found


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # (as txamqp: bytes where the text is not UTF-8)


def read_table(data: bytes, at: int, depth: int) -> tuple[dict[str | bytes, Any], int]:
    """A field table at ``at``: (its values, the offset after it)."""
    (size,), at = _LONG.unpack_from(data, at), at + 4
    end = at + size
    if end > len(data):
        raise ValueError("a table longer than its frame")
    table: dict[str | bytes, Any] = {}
    while at < end:
        name_end = at + 1 + data[at]
        name = _text(data[at + 1:name_end])
        table[name], at = _read_value(data, name_end, depth + 1)
    return table, at


def _read_value(data: bytes, at: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_TABLE_DEPTH:
        raise ValueError(f"tables or arrays nested deeper than {MAX_TABLE_DEPTH}")
    kind, at = data[at:at + 1], at + 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        value = struct.unpack_from(fixed[0], data, at)[0]
        return (bool(value) if kind == b"t" else value), at + fixed[1]
    if kind in (b"S", b"x"):
        (size,), at = _LONG.unpack_from(data, at), at + 4
        raw = data[at:at + size]
        if len(raw) != size:
            raise ValueError("a string longer than its frame")
        return (_text(raw) if kind == b"S" else raw), at + size
    if kind == b"F":
        return read_table(data, at, depth)
    if kind == b"A":
        (size,), at = _LONG.unpack_from(data, at), at + 4
        end, values = at + size, []
        while at < end:
            value, at = _read_value(data, at, depth + 1)
            values.append(value)
        return values, at
    if kind == b"D":
        scale, value = struct.unpack_from("!Bi", data, at)
        return Decimal(value).scaleb(-scale), at + 5
    if kind == b"V":
        return None, at
    raise ValueError(f"unknown field type {kind!r} in a table")
