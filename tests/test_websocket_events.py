"""WebSocket-over-HTTP's events bodies and GRIP control messages, as
``cyclone_sse.websocket_events`` reads and writes them: every body it writes reads
back the same, and whatever bytes it is given, it answers events or a ValueError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyclone_sse.websocket_events import (
    DEFAULT_MESSAGE_PREFIX,
    TYPES,
    close_content,
    decode,
    encode,
    message_prefix,
    read_close,
    read_control,
)

events = st.lists(st.tuples(st.sampled_from(sorted(TYPES)), st.none() | st.binary()))


@given(events)
def test_what_is_written_reads_back(written):
    assert decode(encode(written)) == written


@given(st.binary())
def test_any_bytes_give_events_or_a_value_error(body):
    try:
        read = decode(body)
    except ValueError:
        return
    assert all(isinstance(kind, str) for kind, _ in read)


def test_the_wire_format():
    """The bytes gripcontrol writes and reads (its encode_websocket_events)."""
    from gripcontrol import WebSocketEvent, encode_websocket_events
    theirs = encode_websocket_events([WebSocketEvent("OPEN"), WebSocketEvent("TEXT", "hé"),
                                      WebSocketEvent("CLOSE", b"\x03\xe8")])
    assert theirs == b"OPEN\r\nTEXT 3\r\nh\xc3\xa9\r\nCLOSE 2\r\n\x03\xe8\r\n"
    assert decode(theirs) == [("OPEN", None), ("TEXT", "hé".encode()), ("CLOSE", b"\x03\xe8")]
    assert encode(decode(theirs)) == theirs


@pytest.mark.parametrize("body", [b"OPEN", b"TEXT 5\r\nab\r\n", b"TEXT zz\r\nab\r\n",
                                  b"text\r\n", b"TEXT 2\r\nabcd", b"TEXT -1\r\n\r\n"])
def test_what_is_refused(body):
    with pytest.raises(ValueError):
        decode(body)


def test_close_content():
    assert read_close(close_content(4000, "bye")) == (4000, "bye")
    assert close_content(None) is None and read_close(None) == (None, "")


def test_the_grip_extension():
    assert message_prefix("") is None
    assert message_prefix("permessage-deflate") is None
    assert message_prefix("grip") == DEFAULT_MESSAGE_PREFIX
    assert message_prefix('grip; message-prefix=""') == b""
    assert message_prefix("x, GRIP; message-prefix=msg:") == b"msg:"


def test_control_messages():
    sub = read_control(b'{"type": "subscribe", "channel": "room", "filters": ["skip-self"]}')
    assert (sub.type, sub.channel, sub.filters) == ("subscribe", "room", {"skip-self"})
    meta = read_control(b'{"type": "set-meta", "name": "User", "value": "alice"}')
    assert (meta.name, meta.value) == ("user", "alice")
    ka = read_control(b'{"type": "keep-alive", "content-bin": "AAE=", "timeout": 5, '
                      b'"mode": "interval"}')
    assert (ka.content, ka.kind, ka.timeout, ka.mode) == (b"\x00\x01", "binary", 5.0,
                                                          "interval")
    assert read_control(b'{"type": "detach"}').type == "detach"


@pytest.mark.parametrize("text", [
    b"not json", b"[1]", b'{"type": "explode"}', b'{"type": "subscribe"}',
    b'{"type": "subscribe", "channel": "a b"}',
    b'{"type": "subscribe", "channel": "news.*"}',  # (a pattern reaches further than a name)
    b'{"type": "set-meta", "name": "user", "value": "a\\r\\nX-Injected: 1"}',
    b'{"type": "set-meta", "name": "us er", "value": "a"}',
    b'{"type": "keep-alive", "content": "x", "timeout": 0}',
    b'{"type": "keep-alive", "content": "x", "message-type": "shout"}',
])
def test_control_messages_refused(text):
    from cyclone_sse.errors import CycloneSSEError
    with pytest.raises((ValueError, CycloneSSEError)):
        read_control(text)
