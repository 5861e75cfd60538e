"""The two kinds of subscriber connection: an SSE stream and a long-poll request.

Both follow the same rule for a reconnecting client: attach to the registry first and
hold live events, fetch the replay, then hand out replay + the held events newer than
it.  Nothing published during the replay is lost or sent twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from cyclone_sse.event import HEARTBEAT, Event, encode, encode_id_only
from cyclone_sse.history import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.registry import Counters

#: Bytes a stream may queue beyond the transport's own 64 KiB buffer while its client
#: is not reading; past it the stream is closed (the client replays on reconnect).
DEFAULT_MAX_PENDING = 512 * 1024
#: Live events one connection may hold while its replay is being fetched.
MAX_HELD = 10000
#: Named event sent before a replay that cannot be complete (see README "Replay").
GAP_EVENT = "history-gap"


def gap_frame(reason: str, last_id: str | None) -> bytes:
    """The signal that replay cannot be complete.  It has no id, so the client's last
    event id stays put until a replayed event moves it."""
    return encode(None, json.dumps({"reason": reason, "lastEventId": last_id}), GAP_EVENT)


class _ReplayThenLive:
    """Holds live events until the replay is in, then releases the newer ones."""

    def __init__(self) -> None:
        self.live = False
        self.held: list[Event] = []
        self.last_seq = 0  # newest event handed to the client: later ones only
        self.epoch = ""    # the history epoch last_seq belongs to

    def unseen(self, events: list[Event]) -> list[Event] | None:
        """The events not handed over yet, or None when that is all of them (the usual
        case).  A replay may already have sent the first events of a batch published
        in the same reactor turn; a new history epoch starts its sequence again."""
        last_seq, self.last_seq = self.last_seq, events[-1].seq
        if events[0].seq > last_seq:
            return None
        epoch = events[0].id.rpartition("-")[0]
        if epoch != self.epoch:
            self.epoch = epoch
            return None
        return [e for e in events if e.seq > last_seq]

    def hold(self, events: list[Event]) -> bool:
        """Keep ``events`` for later while the replay is not in; False if too many."""
        self.held.extend(events)
        return len(self.held) <= MAX_HELD

    def release(self, replay: Replay) -> list[Event]:
        """Replayed events followed by the held ones that are newer."""
        events = list(replay.events)
        last_seq = events[-1].seq if events else 0
        events.extend(e for e in self.held if e.seq > last_seq)
        self.held = []
        self.live = True
        # Only what was handed over counts: an event announced late (Redis) or still
        # queued for fan-out (this reactor turn) and not in the replay is still to come.
        self.last_seq = events[-1].seq if events else 0
        self.epoch = replay.head_id.rpartition("-")[0]
        return events


@implementer(ISubscriber, IPushProducer)
class StreamSubscriber(_ReplayThenLive):
    """An open ``text/event-stream`` response written straight to the transport.

    Registered as the transport's streaming producer: Twisted pauses it when the
    kernel and the transport buffer are full, and from then on writes are counted;
    past ``max_pending`` bytes the client is too slow and the stream is aborted.
    """

    def __init__(self, transport, counters: Counters,  # type: ignore[no-untyped-def]
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        super().__init__()
        self.transport = transport
        self.counters = counters
        self.max_pending = max_pending
        self.paused = False
        self.pending = 0
        self.closed = False
        # A plain TCP transport's socket, for the direct-send fast path.  TLS wrappers
        # (which forward attribute lookups to the TCP transport below them!) and test
        # transports always go through transport.write.
        self.socket = transport.socket if type(transport) is tcp.Server else None
        transport.registerProducer(self, True)

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if self.live:
            rest = self.unseen(events)
            if rest is None:
                self.write(frame)
            elif rest:
                self.write(b"".join(e.frame for e in rest))
        elif not self.hold(events):
            self._overflow()

    def write(self, data: bytes) -> None:
        """Send now if the socket takes it all; otherwise let Twisted buffer the rest.

        Going through ``transport.write`` costs two ``epoll_ctl`` calls and a reactor
        dispatch per write; a fan-out to thousands of idle streams rarely needs them, as
        their socket buffers are empty.  Order is kept: the direct path is only taken
        while Twisted holds nothing for this connection.
        """
        transport = self.transport
        sock = self.socket
        if sock is not None and not transport.dataBuffer and not transport._tempDataLen \
                and not transport.disconnecting:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # let the transport find and report the broken connection
            if sent == len(data):
                return
            data = data[sent:]
        if self.paused:
            self.pending += len(data)
            if self.pending > self.max_pending:
                self._overflow()
                return
        transport.write(data)

    def start_live(self, replay: Replay, last_id: str | None, head: bytes = b"") -> None:
        """Write the response head, the replay (and the gap signal), and switch to live
        delivery."""
        parts = [head] if head else []
        if replay.gap:
            parts.append(gap_frame(replay.gap, last_id))
        events = self.release(replay)
        parts.extend(event.frame for event in events)
        if not last_id and not events and replay.head_id:
            # Give even a quiet stream a resume point (see encode_id_only).
            parts.append(encode_id_only(replay.head_id))
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


Responder = Callable[[list[Event]], None]


@implementer(ISubscriber)
class PollSubscriber(_ReplayThenLive):
    """A held long-poll request: answered with the first batch of events or at timeout.

    Events published in the same reactor turn go out in one answer.
    """

    def __init__(self, clock, respond: Responder, timeout: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.clock = clock
        self.respond = respond
        self.done = False
        self.events: list[Event] = []
        self._timeout = clock.callLater(timeout, self.finish) if timeout else None
        self._flush = None

    def deliver(self, events: list[Event], frame: bytes) -> None:
        if self.done:
            return
        if not self.live:
            self.hold(events)
            return
        rest = self.unseen(events)
        self.events.extend(events if rest is None else rest)
        if self._flush is None:
            self._flush = self.clock.callLater(0, self.finish)

    def start_live(self, replay: Replay) -> None:
        self.events = self.release(replay)
        if self.events or replay.gap:
            self.finish()

    def heartbeat(self) -> None:
        pass

    def close(self) -> None:
        self.finish()

    def finish(self) -> None:
        if not self.done:
            self.cancel()
            self.respond(self.events)

    def cancel(self) -> None:
        """Stop the timers; the request is over (answered or gone)."""
        self.done = True
        for call in (self._timeout, self._flush):
            if call is not None and call.active():
                call.cancel()
