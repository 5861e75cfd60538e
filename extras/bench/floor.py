"""The floor of a per-user publish on Twisted: a bare protocol doing only its I/O.

It takes ``GET /?channels=<name>`` as a stream (one fixed head) and ``POST /publish``
with ``channel=<name>&message=<text>`` (the load client's form, channel first), finds
both by byte search, sends the subscriber one frame and the publisher one fixed answer,
each with one ``send()``.  No checks, no history, no timers, no HTTP beyond that: what
is left is the reactor's turn, the ``recv()`` and the two ``send()`` calls, which is
what any Twisted server pays before its own work.  ``requests.py floor`` drives it with
the per-user load, beside the daemon and nginx + nchan::

    uv run python extras/bench/requests.py per-user nchan floor

Run as a script it listens on a free port of 127.0.0.1 and prints the port.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from typing import Any

from measured import ServerProcess, wait_listening

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
          b'{"status":"ok"} ')
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n:ok\n\n"


def serve() -> None:
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import protocol, reactor

    streams: dict[bytes, Any] = {}

    class Bare(protocol.Protocol):
        buffer = b""

        def connectionMade(self) -> None:
            transport: Any = self.transport
            self.socket = transport.socket

        def dataReceived(self, data: bytes) -> None:
            data = self.buffer + data
            while True:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = data[:end]
                if head.startswith(b"GET"):
                    streams[head.split(b"channels=", 1)[1].split(b" ", 1)[0]] = self
                    self.socket.send(STREAM_HEAD)
                    data = data[end + 4:]
                    continue
                at = head.find(b"Content-Length: ") + 16
                stop = head.find(b"\r\n", at)
                length = int(head[at:stop] if stop > 0 else head[at:])
                if len(data) < end + 4 + length:
                    break
                body, data = data[end + 4:end + 4 + length], data[end + 4 + length:]
                fields, _, message = body.partition(b"&message=")
                stream = streams.get(fields[len(b"channel="):])
                if stream is not None:
                    stream.socket.send(b"id: 1\ndata: " + message + b"\n\n")
                self.socket.send(ANSWER)
            self.buffer = data

    factory = protocol.ServerFactory()
    factory.protocol = Bare
    listening: Any = reactor.listenTCP(0, factory, backlog=4096,  # type: ignore[attr-defined]
                                       interface="127.0.0.1")
    print(listening.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


class Floor(ServerProcess):
    """The bare protocol in its own process on CPU 0, with run.Daemon's interface."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, __file__],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        wait_listening(self.port, "the floor server")


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    serve()
