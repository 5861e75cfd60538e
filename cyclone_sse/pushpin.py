"""Pushpin's publish format, as cyclone-sse reads it: ``{"items": [...]}`` bodies (its
HTTP publish API) and ZeroMQ messages (JSON after a ``J``, or a TNetString), each item
turned into cyclone-sse events.

An item has a ``channel``, an optional ``id`` (kept for de-duplication, like a
publisher's ``id``) and ``prev-id`` (accepted and ignored: the history orders events
as they arrive), and ``formats``:

``http-stream``    ``content`` (or ``content-bin``, base64): when it is Server-Sent
                   Events text, each event in it (its ``event:`` and ``data:``) becomes an
                   event; other text becomes one event's data.  ``action: close`` carries
                   nothing.
``ws-message``     ``content``/``content-bin``: one event's data (used when there is no
                   ``http-stream``; binary content that is not UTF-8 stays base64), and
                   the message a GRIP-held WebSocket gets; ``action: close`` closes
                   those WebSockets and carries nothing.
``http-response``  ``body``/``body-bin``: one event's data (when neither of the above).

So one item gives the same events to SSE, long-poll and WebSocket subscribers, whatever
formats its publisher chose.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cyclone_sse.checks import MAX_JSON_DEPTH, loads
from cyclone_sse.errors import BadRequest, TooDeep
from cyclone_sse.event import parse_stream

#: Most items one publish may carry.
MAX_ITEMS = 1000


@dataclass(frozen=True)
class GripItem:
    """What a GRIP-held client gets of an item, as Pushpin gives it: its ``http-stream``
    content as published (written as it is, after the content filters), or its
    ``action: close``; its ``id`` and ``prev-id`` (the held stream's ids), the
    ``content-filters`` it was published for, its ``meta`` (``skip_users``,
    ``require_sub``, ``sender``...) and, for a held response, its ``http-response``."""

    content: bytes | None = None
    close: bool = False
    id: str | None = None
    prev_id: str | None = None
    filters: frozenset[str] = frozenset()
    meta: tuple[tuple[str, str], ...] = ()
    response: tuple[int, tuple[tuple[str, str], ...], bytes] | None = None
    #: its ``ws-message``: the message a GRIP-held WebSocket gets, and whether it is
    #: binary; or its ``action: close``, with the close code and reason
    message: bytes | None = None
    binary: bool = False
    ws_close: tuple[int, str] | None = None

    @property
    def closes(self) -> bool:
        """Whether it closes GRIP-held clients and carries nothing else."""
        return self.close or (self.ws_close is not None and self.content is None)

    def meta_value(self, name: str) -> str | None:
        """A ``meta`` value by name."""
        for key, value in self.meta:
            if key == name:
                return value
        return None


#: The ``grip`` of an item's second and later events: written with the first.
CONTINUED = GripItem()


@dataclass(frozen=True)
class PushpinEvent:
    """One event an item gives: what ``Broker.publish`` takes, and what a GRIP-held
    client gets of it (``grip``; ``CONTINUED`` after an item's first event)."""

    channel: str
    data: str
    name: str | None
    publisher_id: str | None
    grip: GripItem | None = None


def _ws_message(message: Any) -> tuple[bytes | None, bool, tuple[int, str] | None]:
    """A ``ws-message`` format: its content, whether it is binary, its close."""
    if not isinstance(message, dict):
        return None, False, None
    if message.get("action") == "close":
        code, reason = message.get("code", 1000), message.get("reason", "")
        if not isinstance(code, int) or not 1000 <= code <= 4999 or \
                not isinstance(reason, str) or len(reason.encode("utf-8")) > 123:
            raise BadRequest("a ws-message close needs a 'code' of 1000-4999 and a "
                             "'reason' of at most 123 bytes", field="ws-message")
        return None, False, (code, reason)
    if "content-bin" in message and "content" not in message:
        try:
            return base64.b64decode(message["content-bin"], validate=True), True, None
        except (binascii.Error, ValueError, TypeError):
            raise BadRequest("'content-bin' is not base64", field="content-bin") from None
    return _text(message, "content", "ws-message").encode("utf-8"), False, None


def _grip_item(item: dict[str, Any], stream: Any, response: Any,
               message: Any = None) -> GripItem:
    """The GRIP side of an item (checked: ``BadRequest`` names what cannot be read)."""
    prev_id = item.get("prev-id")
    if prev_id is not None and not isinstance(prev_id, str):
        raise BadRequest("'prev-id' must be a string", field="prev-id")
    meta = item.get("meta") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise BadRequest("'meta' must be an object of strings", field="meta")
    content, close, filters = None, False, frozenset[str]()
    if isinstance(stream, dict):
        close = stream.get("action") == "close"
        if not close:
            content = _text(stream, "content", "http-stream").encode("utf-8")
        named = stream.get("content-filters") or []
        if not isinstance(named, list) or not all(isinstance(f, str) for f in named):
            raise BadRequest("'content-filters' must be a list of names",
                             field="content-filters")
        filters = frozenset(named)
    answer = None
    if isinstance(response, dict):
        code = response.get("code", 200)
        headers = response.get("headers") or {}
        if not isinstance(code, int) or not 200 <= code <= 599 or not isinstance(
                headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise BadRequest("'http-response' needs a code of 200-599 and headers of "
                             "strings", field="http-response")
        body = _text(response, "body", "http-response") if (
            "body" in response or "body-bin" in response) else ""
        answer = (code, tuple(headers.items()), body.encode("utf-8"))
    ws, binary, ws_close = _ws_message(message)
    return GripItem(content, close, item.get("id"), prev_id, filters,
                    tuple(sorted(meta.items())), answer, ws, binary, ws_close)


def _text(format_: dict[str, Any], field: str, name: str) -> str:
    """A format's ``field`` or its base64 ``field-bin``, as UTF-8 text (a format
    ``name`` without either publishes nothing: refused, never answered 200)."""
    value = format_.get(field)
    if isinstance(value, str):
        return value
    if value is not None:
        raise BadRequest(f"{name}: '{field}' must be a string (or '{field}-bin' base64)",
                         field=field)
    raw = format_.get(f"{field}-bin")
    if raw is None:
        raise BadRequest(f"{name}: needs '{field}' or '{field}-bin'", field=field)
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest(f"'{field}-bin' is not base64 of UTF-8 text", field=field) from None


def _stream_events(content: str) -> list[tuple[str, str | None]]:
    """(data, event name) of each Server-Sent Event in ``content``; the whole text as
    one event's data when it holds none."""
    if "data:" in content and content.endswith("\n\n"):
        parsed = [(e["data"], None if e["event"] == "message" else e["event"])
                  for e in parse_stream(content) if "data" in e]
        if parsed:
            return parsed
    return [(content, None)]


def item_events(item: Any, channel: str | None = None) -> list[PushpinEvent]:
    """The events of one item (``channel`` when the transport names it, as ZeroMQ's
    first frame does)."""
    if not isinstance(item, dict):
        raise BadRequest("each item is a JSON object", field="items")
    channel = item.get("channel", channel)
    if not isinstance(channel, str):
        raise BadRequest("an item needs a 'channel'", field="channel")
    item_id = item.get("id")
    if item_id is not None and not isinstance(item_id, str):
        raise BadRequest("'id' must be a string", field="id")
    formats = item.get("formats", item)  # (ZeroMQ items may carry them at the top)
    if not isinstance(formats, dict):
        raise BadRequest("'formats' must be an object", field="formats")
    found: list[tuple[str, str | None]] = []
    stream, message, response = (formats.get(name) for name in
                                 ("http-stream", "ws-message", "http-response"))
    grip = _grip_item(item, stream, response, message)
    if grip.closes:  # (a close carries nothing but to GRIP-held clients)
        return [PushpinEvent(channel, "", None, item_id, grip)]
    if isinstance(stream, dict):
        found = _stream_events(_text(stream, "content", "http-stream"))
    elif grip.message is not None:
        try:
            found = [(grip.message.decode("utf-8"), None)]
        except UnicodeDecodeError:  # (binary: its base64, as published, to the others)
            found = [(str(message["content-bin"]), None)]  # type: ignore[index]
    elif isinstance(response, dict):
        found = [(_text(response, "body", "http-response"), None)]
    else:
        raise BadRequest("an item needs one of the formats http-stream, ws-message, "
                         "http-response", field="formats")
    many = len(found) > 1
    return [PushpinEvent(channel, data, name,
                         f"{item_id}:{n}" if many and item_id else item_id,
                         CONTINUED if n else grip)
            for n, (data, name) in enumerate(found)]


def body_events(body: Any) -> list[PushpinEvent]:
    """The events of an HTTP publish body ``{"items": [...]}``."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest("a Pushpin publish is {\"items\": [...]}", field="items")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"more than {MAX_ITEMS} items in one publish", field="items")
    return [event for item in items for event in item_events(item)]


def tnetstring_loads(data: bytes) -> Any:
    """Decode one TNetString (what Pushpin's ZeroMQ clients send); ValueError if it is
    not one."""
    value, rest = _tnet(data, 1)
    if rest:
        raise ValueError("bytes after the TNetString")
    return value


def _tnet(data: bytes, depth: int) -> tuple[Any, bytes]:
    size, colon, rest = data.partition(b":")
    if not colon or not size.isdigit() or len(size) > 9:
        raise ValueError("not a TNetString")
    length = int(size)
    if len(rest) < length + 1:
        raise ValueError("TNetString cut short")
    payload, kind, rest = rest[:length], rest[length:length + 1], rest[length + 1:]
    if kind == b",":
        return payload, rest
    if kind == b"#":
        return int(payload), rest
    if kind == b"^":
        return float(payload), rest
    if kind == b"!":
        return payload == b"true", rest
    if kind == b"~":
        return None, rest
    if kind in (b"]", b"}"):
        if depth > MAX_JSON_DEPTH:  # (the same bound as JSON's)
            raise TooDeep(f"TNetString nested deeper than {MAX_JSON_DEPTH} levels",
                          field="item")
        values = []
        while payload:
            value, payload = _tnet(payload, depth + 1)
            values.append(value)
        if kind == b"]":
            return values, rest
        if len(values) % 2:
            raise ValueError("a TNetString dict with a key and no value")
        return {_str(k): v for k, v in zip(values[::2], values[1::2], strict=True)}, rest
    raise ValueError(f"unknown TNetString type {kind!r}")


def _str(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _decoded(value: Any) -> Any:
    """TNetString byte strings as text (Pushpin's items are text)."""
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return _str(value)


def zmq_item(payload: bytes) -> Any | None:
    """A Pushpin item in a ZeroMQ payload (``J`` + JSON, or a TNetString), or None when
    the payload is plain data."""
    if payload[:2] == b"J{":
        try:
            return loads(payload[1:], "item")
        except TooDeep:
            raise
        except BadRequest:
            return None  # (not JSON after all: plain data that starts with J{)
    if payload[:1].isdigit() and payload.endswith(b"}"):
        try:
            return _decoded(tnetstring_loads(payload))
        except (ValueError, UnicodeDecodeError):
            return None
    return None
