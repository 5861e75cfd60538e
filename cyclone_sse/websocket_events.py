"""WebSocket-over-HTTP, Pushpin's way of giving a plain HTTP backend WebSocket clients:
the ``application/websocket-events`` bodies a GRIP proxy and its backend exchange (each
event ``TYPE`` or ``TYPE <hex length>`` on a line, then that many bytes and a CRLF), the
``grip`` extension that turns GRIP on, and the control messages (``c:`` + JSON) a
backend sends its proxy inside them."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass

from cyclone_sse.channels import check_channel

CONTENT_TYPE = "application/websocket-events"
#: What a message from the backend that is meant for the proxy starts with.
CONTROL_PREFIX = b"c:"
#: The prefix of messages meant for the client when the backend's ``grip`` extension
#: names none (its ``message-prefix`` parameter, which may be empty).
DEFAULT_MESSAGE_PREFIX = b"m:"
#: The event types of the protocol; others are skipped (a newer backend's).
TYPES = frozenset({"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"})
#: Pushpin's floor for a backend's ``Keep-Alive-Interval`` (seconds).
MIN_KEEP_ALIVE = 20

#: One event: its type and its content (None when it carries none).
WsEvent = tuple[str, "bytes | None"]


def encode(events: list[WsEvent]) -> bytes:
    """The body that carries ``events``."""
    out = []
    for kind, content in events:
        if content is None:
            out.append(kind.encode("ascii") + b"\r\n")
        else:
            out.append(b"%s %x\r\n%s\r\n" % (kind.encode("ascii"), len(content), content))
    return b"".join(out)


def decode(body: bytes) -> list[WsEvent]:
    """The events of a body; ValueError names what cannot be read."""
    events: list[WsEvent] = []
    at = 0
    while at < len(body):
        end = body.find(b"\r\n", at)
        if end < 0:
            raise ValueError("an event line without CRLF")
        kind, space, size = body[at:end].partition(b" ")
        at = end + 2
        if not kind.isalpha() or not kind.isupper() or len(kind) > 20:
            raise ValueError(f"an event type of {kind[:20]!r}")
        content = None
        if space:
            if not size or len(size) > 8 or size.strip(b"0123456789abcdefABCDEF"):
                raise ValueError(f"a content length of {size[:20]!r}")
            length = int(size, 16)
            if body[at + length:at + length + 2] != b"\r\n":
                raise ValueError("an event's content is cut short")
            content = body[at:at + length]
            at += length + 2
        events.append((kind.decode("ascii"), content))
    return events


def close_content(code: int | None, reason: str = "") -> bytes | None:
    """A ``CLOSE`` event's content: the code (two bytes) and reason, or None."""
    if code is None:
        return None
    return struct.pack("!H", code) + reason.encode("utf-8")


def read_close(content: bytes | None) -> tuple[int | None, str]:
    """The code and reason of a ``CLOSE`` event's content."""
    if not content or len(content) < 2:
        return None, ""
    return struct.unpack("!H", content[:2])[0], content[2:].decode("utf-8", "replace")


def message_prefix(extensions: str) -> bytes | None:
    """The message prefix when a backend's ``Sec-WebSocket-Extensions`` answer names
    ``grip`` (GRIP on: ``c:`` messages are for the proxy, and only messages with the
    prefix reach the client, without it), else None (every message is the client's)."""
    for extension in extensions.split(","):
        name, *params = (part.strip() for part in extension.split(";"))
        if name.lower() != "grip":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "message-prefix":
                return value.strip().strip('"').encode("utf-8")
        return DEFAULT_MESSAGE_PREFIX
    return None


@dataclass(frozen=True)
class Control:
    """A GRIP control message: ``subscribe`` (``channel``, ``filters``),
    ``unsubscribe`` (``channel``), ``detach``, ``session``, ``set-meta`` (``name``,
    ``value``: empty removes it) or ``keep-alive`` (``content`` sent to the client as
    a ``kind`` message when it was sent nothing for ``timeout`` seconds; ``mode``
    ``interval``: every ``timeout`` seconds; no content: none)."""

    type: str
    channel: str = ""
    filters: frozenset[str] = frozenset()
    name: str = ""
    value: str = ""
    content: bytes | None = None
    kind: str = "text"
    timeout: float = 0.0
    mode: str = "idle"


CONTROL_TYPES = frozenset({"subscribe", "unsubscribe", "detach", "session", "set-meta",
                           "keep-alive"})


def _string(message: dict[str, object], field: str, default: str | None = None) -> str:
    value = message.get(field, default)
    if not isinstance(value, str):
        raise ValueError(f"'{field}' must be a string")
    return value


def read_control(text: bytes) -> Control:
    """A control message (what follows ``c:``); ValueError names what is wrong."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("a control message is JSON") from None
    if not isinstance(message, dict):
        raise ValueError("a control message is a JSON object")
    kind = message.get("type")
    if kind not in CONTROL_TYPES:
        raise ValueError(f"unknown control message type {str(kind)[:40]!r}")
    if kind in ("subscribe", "unsubscribe"):
        channel = check_channel(_string(message, "channel"), "channel")
        filters = message.get("filters") or []
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise ValueError("'filters' must be a list of names")
        return Control(kind, channel=channel, filters=frozenset(filters))
    if kind == "set-meta":
        name = _string(message, "name")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError("'name' must be a header-safe name")
        value = _string(message, "value", "")
        if any(char in value for char in "\r\n\0"):
            raise ValueError("'value' may not hold CR, LF or NUL")  # (a header value)
        return Control(kind, name=name.lower(), value=value)
    if kind == "keep-alive":
        return _keep_alive(message)
    return Control(kind)


def _keep_alive(message: dict[str, object]) -> Control:
    content: bytes | None = None
    kind = "text"
    if "content-bin" in message:
        try:
            content = base64.b64decode(_string(message, "content-bin"), validate=True)
        except binascii.Error:
            raise ValueError("'content-bin' is not base64") from None
        kind = "binary"
    elif "content" in message:
        content = _string(message, "content").encode("utf-8")
    kind = _string(message, "message-type", kind)
    if kind not in ("text", "binary", "ping", "pong"):
        raise ValueError(f"'message-type' {kind[:20]!r}: text, binary, ping or pong")
    timeout = message.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 1:
        raise ValueError("'timeout' must be a number of seconds (at least 1)")
    mode = _string(message, "mode", "idle")
    if mode not in ("idle", "interval"):
        raise ValueError("'mode' must be idle or interval")
    return Control("keep-alive", content=content, kind=kind, timeout=float(timeout),
                   mode=mode)
