"""The long-poll transport: a held request answered, as JSON, with the first batch of
events (or at its timeout), carrying the id to resume from on the next poll."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from cyclone_sse.event import Event
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.subscription import Subscriber

#: Called once with the JSON answer: ``{events, lastEventId, gap, retry}``.
Responder = Callable[[dict[str, object]], None]


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
        self.events = self.release(replay)
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
            self.respond(self.answer())

    def answer(self) -> dict[str, object]:
        """The JSON body: the events, and the id the next poll resumes from."""
        events, replay = self.events, self.replay
        resume: str | None
        if events:
            resume = events[-1].id
        elif replay is None or replay.head is None or (self.last_id and not replay.gap):
            # Nothing new (or the history could not be asked): stay where the client was.
            resume = self.last_id
        else:
            resume = str(replay.head)
        return {"events": [e.as_json() for e in events], "lastEventId": resume,
                "gap": replay.gap if replay is not None else None, "retry": self.retry}
