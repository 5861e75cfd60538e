"""ZeroMQ sockets watched by the reactor: pyzmq directly, its socket's ``ZMQ_FD`` given
to the reactor as a reader.  (txZMQ, the Twisted wrapper, has had no release since 2019;
the file-descriptor protocol is small and documented by libzmq: the descriptor signals
that ``ZMQ_EVENTS`` may have changed, so every wake-up reads until it says no more.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

#: Messages read per reactor turn before yielding to the rest of the daemon.
BATCH = 1000

MessageHandler = Callable[[list[bytes]], None]


def endpoints(text: str) -> list[str]:
    """``tcp://a:1, ipc:///x`` → the endpoints."""
    return [e.strip() for e in text.split(",") if e.strip()]


@implementer(IReadDescriptor)
class ZmqReader:
    """Delivers every multipart message arriving on ``socket`` to ``on_message``."""

    def __init__(self, reactor: Any, socket: zmq.Socket[Any],
                 on_message: MessageHandler) -> None:
        self.reactor = reactor
        self.socket = socket
        self.on_message = on_message
        self._fd = socket.getsockopt(zmq.FD)
        self._more: Any = None

    def start(self) -> None:
        self.reactor.addReader(self)
        self._more = self.reactor.callLater(0, self.doRead)  # what came before we watched

    def stop(self) -> None:
        self.reactor.removeReader(self)
        if self._more is not None and self._more.active():
            self._more.cancel()
        self.socket.close(linger=0)

    def fileno(self) -> int:
        return int(self._fd)

    def doRead(self) -> None:
        self._more = None
        socket = self.socket
        if socket.closed:
            return
        for _ in range(BATCH):
            if not int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.on_message(frames)
        # (the descriptor will not signal again for what is already queued)
        self._more = self.reactor.callLater(0, self.doRead)

    def connectionLost(self, reason: Any) -> None:
        pass

    def logPrefix(self) -> str:
        return "zmq"
