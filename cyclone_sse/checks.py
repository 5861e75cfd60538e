"""The publish checks every ingestion path runs, written once: JSON from a client read
with bounded nesting, and a message's channel, data, event name and id checked before
it is stored (HTTP, WebSocket, Pushpin's HTTP and ZeroMQ formats, raw Redis, AMQP)."""

from __future__ import annotations

import json
from typing import Any

from cyclone_sse.channels import check_channel
from cyclone_sse.errors import BadRequest, TooDeep
from cyclone_sse.event import check_publish, check_text

#: Deepest nesting of arrays and objects in any JSON a client sends: a publish body, a
#: WebSocket message, a Pushpin item.  (Python's decoder recurses: ~1,000 levels raise
#: RecursionError, and everything below that costs memory and time for nothing.)
MAX_JSON_DEPTH = 32


def deeper_than(value: object, limit: int) -> bool:
    """Whether arrays/objects in ``value`` nest deeper than ``limit`` (no recursion;
    only containers are walked)."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def loads(text: str | bytes, field: str = "body") -> Any:
    """JSON a client sent, or ``BadRequest`` naming ``field``: not UTF-8, not JSON, or
    nested deeper than ``MAX_JSON_DEPTH``."""
    try:
        # (bytes are decoded here: json.loads would also take UTF-16 and UTF-32)
        value = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"{field} is not valid UTF-8 JSON: {exc}", field=field) from None
    except RecursionError:
        value = deep = True
    else:
        deep = deeper_than(value, MAX_JSON_DEPTH)
    if deep:
        raise TooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", field=field)
    return value


def check_message(channel: str, data: str, name: str | None = None,
                  publisher_id: str | None = None) -> None:
    """What any publish must be, whatever brought it: a valid channel name, text that
    a UTF-8 stream can carry, an event name that cannot break out of its SSE line and
    is not one only the daemon sends (``history-gap``…), an id of bounded length."""
    check_messages((channel,), data, name, publisher_id)


def check_messages(channels: list[str] | tuple[str, ...], data: str,
                   name: str | None = None, publisher_id: str | None = None) -> None:
    """``check_message`` for one publish to several channels (an HTTP publish): each
    name checked, the rest once."""
    for channel in channels:
        check_channel(channel)
    check_text(data, "data")
    check_publish(name or None, publisher_id or None)
