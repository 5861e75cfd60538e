"""The long-poll transport: a held request answered with the first batch of events (or
at its timeout) and the id to resume from on the next poll: as JSON, or as the same
Server-Sent Events text a stream would have carried (for XHR polyfills that parse it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from cyclone_sse.event import Event, encode_gap, encode_position, encode_retry, frames
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.subscription import Subscriber

#: Called once with the subscriber, when it is time to answer (``answer()`` or
#: ``answer_sse()`` make the body).
Responder = Callable[["PollSubscriber"], None]


@implementer(ISubscriber)
class PollSubscriber(Subscriber):
    """A held long-poll request: answered with the first batch of events or at timeout.

    Events published in the same reactor turn go out in one answer.
    """

    def __init__(self, clock: Any, respond: Responder, timeout: float, retry: int,
                 last_id: str | None) -> None:
        super().__init__()
        self.clock = clock
        self.respond = respond
        self.retry = retry
        self.last_id = last_id  # what the client sent
        self.replay: Replay | None = None
        self.done = False
        self.events: list[Event] = []
        self._timeout = clock.callLater(timeout, self.finish) if timeout else None
        self._flush: Any = None

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

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        self.replay = replay
        self.events = self.release(replay, last_id)
        if self.events or replay.gap:
            self.finish()

    def heartbeat(self) -> None:
        pass

    def close(self) -> None:
        self.finish()

    def disconnected(self) -> None:
        """Stop the timers; the request is over (answered or gone)."""
        self.done = True
        for call in (self._timeout, self._flush):
            if call is not None and call.active():
                call.cancel()

    def finish(self) -> None:
        if not self.done:
            self.disconnected()
            self.respond(self)

    def resume(self) -> str | None:
        """The id the next poll resumes from."""
        events, replay = self.events, self.replay
        if events:
            return self.resume_id() if self.sharded else events[-1].id
        if replay is None or replay.head is None or (self.last_id and not replay.gap):
            # Nothing new (or the history could not be asked): stay where the client was.
            return self.last_id
        return str(replay.head)

    def answer(self) -> dict[str, object]:
        """The JSON body: the events, and the id the next poll resumes from."""
        replay = self.replay
        return {"events": [e.as_json() for e in self.events], "lastEventId": self.resume(),
                "gap": replay.gap if replay is not None else None, "retry": self.retry}

    def answer_sse(self, tagged: bool = False) -> bytes:
        """The same answer as event-stream text: ``retry``, the gap signal, the events
        (channel-aware when ``tagged``), and the resume point when there is no event to
        carry it."""
        parts = [encode_retry(self.retry)]
        if self.replay is not None and self.replay.gap:
            parts.append(encode_gap(self.replay.gap, self.last_id))
        parts.append(frames(self.events, tagged))
        resume = self.resume()
        if not self.events and resume and resume != self.last_id:
            parts.append(encode_position(resume))
        return b"".join(parts)
