"""Writing straight to a TCP socket while Twisted holds nothing for it: the hot paths'
way around ``transport.write`` (streams, answers, Redis commands)."""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def direct_socket(transport: Any) -> Any:
    """A plain TCP transport's socket (a server's or a client's), for ``send_now``; None
    for anything else (TLS wrappers forward attribute lookups to the TCP transport below
    them!)."""
    return transport.socket if type(transport) in (tcp.Server, tcp.Client) else None


def send_now(transport: Any, sock: Any, data: bytes) -> bytes:
    """Send what the socket takes at once, while Twisted holds nothing for this
    connection (so order is kept); returns the rest, for ``transport.write``.

    Going through ``transport.write`` costs two ``epoll_ctl`` calls and a reactor
    dispatch per write; a fan-out to thousands of idle connections, or the answer to a
    publish, rarely needs them.  (``dataBuffer`` and ``_tempDataLen`` are Twisted's
    private write buffer: tests/test_quality.py checks they still exist.)"""
    if transport.dataBuffer or transport._tempDataLen or transport.disconnecting:
        return data
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        sent = 0  # let the transport find and report the broken connection
    return data[sent:] if sent != len(data) else b""


def write_now(transport: Any, sock: Any, data: bytes) -> None:
    """Write ``data``: straight to ``sock`` (from ``direct_socket``; None: never) what
    it takes at once, the rest through the transport."""
    if sock is not None:
        data = send_now(transport, sock, data)
        if not data:
            return
    transport.write(data)
