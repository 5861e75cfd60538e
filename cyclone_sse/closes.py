"""Every close code the daemon sends, declared once: WebSocket close frames, and SockJS
close frames (``c[code,"reason"]``).  The manual's tables are built from here
(docs/reference/websocket.rst) and a test fails on a code the transports send that is
not declared here."""

from __future__ import annotations

#: WebSocket close codes (RFC 6455 7.4), and when the daemon sends each.
WEBSOCKET: tuple[tuple[int, str], ...] = (
    (1000, "a GRIP backend closed the connection without a code of its own"),
    (1001, "the daemon is stopping (reconnect: another daemon, or this one when back)"),
    (1002, "protocol error: an unmasked frame, an unknown opcode, a control frame over 125 "
           "bytes or fragmented"),
    (1003, "a binary message (the protocol is JSON text)"),
    (1007, "invalid UTF-8 in a text message"),
    (1008, "a message that is not a JSON object, or JSON nested deeper than 32 levels "
           "(over SockJS: a frame that is not a JSON array of strings)"),
    (1009, "a message over --ws-max-message (compressed messages: once inflated)"),
    (1011, "no answer to the last ping, or a GRIP backend that failed or did not answer"),
)

#: SockJS close frames, and when a session gets each.
SOCKJS: tuple[tuple[int, str], ...] = (
    (1002, "Connection interrupted: the network cut the request that waited for the "
           "session's frames"),
    (1008, "a frame that is not a JSON array of strings (over the WebSocket transport)"),
    (1009, "more than --max-pending bytes waited for the client"),
    (2010, "Another connection still open: a second request for the session's frames"),
    (3000, "Go away!: the close test service (--sockjs-test-services)"),
    (4001, "the token of the session's default channels expired: open another session "
           "with a fresh one"),
)


def render_table(codes: tuple[tuple[int, str], ...]) -> str:
    """A reStructuredText table of ``codes``."""
    rule = "====  " + "=" * 76
    return "\n".join([rule, *(f"{code}  {what}" for code, what in codes), rule]) + "\n"
