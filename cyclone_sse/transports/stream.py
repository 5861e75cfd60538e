"""The SSE stream transport: an open ``text/event-stream`` response, written straight to
the socket on the fan-out hot path, with a bound on what a slow client may queue."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from cyclone_sse.event import (
    HEARTBEAT,
    Event,
    encode_gap,
    encode_position,
    encode_token_expired,
    frames,
    tagged_frames,
)
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.registry import Counters
from cyclone_sse.sockets import direct_socket, send_now
from cyclone_sse.subscription import Subscriber

#: Bytes a stream may queue beyond the transport's own 64 KiB buffer while its client
#: is not reading; past it the stream is closed (the client replays on reconnect).
DEFAULT_MAX_PENDING = 512 * 1024


@implementer(IPushProducer)
class BoundedWriter:
    """Writes to a transport whose client may stop reading, straight to the socket when
    it can.

    Registered as the transport's streaming producer: Twisted pauses it when the kernel
    and the transport buffer are full; from then on ``queued`` counts what is written,
    and past ``max_pending`` bytes the client is too slow and the connection is aborted
    (``slow_disconnects``; the client replays on reconnect).  One per connection: an
    SSE stream is one, a WebSocket's subscriptions share theirs."""

    def __init__(self, transport: Any, counters: Counters, max_pending: int) -> None:
        self.socket = direct_socket(transport)  # (the send_now fast path)
        self.transport = transport
        self.counters = counters
        self.max_pending = max_pending
        self.paused = False
        self.pending = 0
        self.closed = False
        transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        """Send now if the socket takes it all (``send_now``); otherwise let Twisted
        buffer the rest."""
        if self.socket is not None:
            data = send_now(self.transport, self.socket, data)
            if not data:
                return
        if self.queued(len(data)):
            self.transport.write(data)

    def queued(self, size: int) -> bool:
        """Account ``size`` bytes about to be written; False when the client is too
        slow (and is cut off)."""
        if self.paused:
            self.pending += size
            if self.pending > self.max_pending:
                self._overflow()
                return False
        return True

    def _overflow(self) -> None:
        if not self.closed:
            self.closed = True
            self.counters.slow_disconnects += 1
            self.transport.unregisterProducer()
            self.transport.abortConnection()

    # IPushProducer: called by the transport.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pending = 0

    def stopProducing(self) -> None:
        self.closed = True


@implementer(ISubscriber)
class StreamSubscriber(BoundedWriter, Subscriber):
    """An open ``text/event-stream`` response written straight to the transport.

    ``head`` (the HTTP response head and ``retry:``) goes out with the replay, once the
    subscription is live upstream: a client that sees the stream open misses nothing
    published afterwards.  Bounded like every ``BoundedWriter``.
    """

    def __init__(self, transport: Any, counters: Counters,
                 max_pending: int = DEFAULT_MAX_PENDING, head: bytes = b"",
                 tagged: bool = False) -> None:
        BoundedWriter.__init__(self, transport, counters, max_pending)
        Subscriber.__init__(self)
        self.head = head
        self.tagged = tagged  # channel-aware frames (Event.tagged_frame)
        self.plain = not tagged  # each event's shared frame as it is (not sharded)

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if self.live:
            rest = self.unseen(events)
            if rest is None and self.plain:  # (the hot path: one test)
                self.write(frame)
            elif rest is None or rest:
                self.write(self._frames(events, rest is None))
        elif not self.hold(events):
            self._overflow()

    def _frames(self, events: list[Event], batch: bool) -> bytes:
        """Frames that are not the shared plain ones: channel-aware (joined once per
        fan-out ``batch``), or under this stream's own position (``sharded``)."""
        if self.sharded:
            return self.framed(events, self.tagged)
        return tagged_frames(events) if batch else frames(events, self.tagged)

    def disconnected(self) -> None:
        self.closed = True

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        """Write the response head, the replay (and the gap signal), and switch to live
        delivery."""
        parts = [self.head] if self.head else []
        self.head = b""  # sent once; not kept for the life of the connection
        if replay.gap:
            parts.append(encode_gap(replay.gap, last_id))
        events = self.release(replay, last_id)
        if self.sharded:
            self.plain = False
            parts.append(self.framed(events, self.tagged))
        else:
            parts.append(frames(events, self.tagged))
        if not events and replay.head is not None and (not last_id or replay.gap):
            # Give even a quiet stream a resume point (see encode_position).
            parts.append(encode_position(str(replay.head)))
        if parts and not self.closed:
            self.write(b"".join(parts))

    def heartbeat(self) -> None:
        if self.live:
            self.write(HEARTBEAT)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def expire(self) -> None:
        """The token expired: say so (with the id to resume from), then close."""
        if not self.closed:
            if self.live:  # (before that, not even the response head went out)
                self.write(encode_token_expired(self.resume_id()))
            self.close()
