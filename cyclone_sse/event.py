"""Events, their ids, and their Server-Sent Events framing.

An event id is a value, ``EventId(epoch, seq)``, written ``<epoch>-<seq>`` on the wire;
this module is the only place that formats or splits that text.

All SSE bytes are produced here, by one pure encoder, once per publish.  The framing
follows the WHATWG HTML "Server-sent events" parsing rules: a payload line break is any
of CRLF, CR or LF, so each becomes a separate ``data:`` line; ``id`` and ``event``
values may not contain CR, LF or NUL, which would let a publisher inject fields
(CWE-93).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cyclone_sse.errors import BadRequest, InvalidEvent

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

#: A comment line: ignored by EventSource, but it keeps proxies and NAT tables
#: from timing the stream out.
HEARTBEAT = b":\n\n"
#: Named event sent before a replay that cannot be complete (see README "Replay");
#: publishers may not use the name.
GAP_EVENT = "history-gap"
#: Named event sent just before a stream whose token expires is closed.
TOKEN_EXPIRED_EVENT = "token-expired"
#: Named event giving a client with no events yet its resume point (see encode_position).
POSITION_EVENT = "stream-open"
#: Named event naming the channel of the event that follows it (``?channelEvents=1``).
CHANNEL_EVENT = "channel"
#: Event names only the daemon sends.
RESERVED_EVENTS = frozenset({GAP_EVENT, TOKEN_EXPIRED_EVENT, POSITION_EVENT, CHANNEL_EVENT})


#: Longest ``id`` a publisher may attach (it is kept for de-duplication).
MAX_PUBLISHER_ID = 200


def check_field(name: str, value: str) -> str:
    """Reject a value that would break out of its SSE field line."""
    if _FORBIDDEN_IN_FIELD.search(value):
        raise InvalidEvent(f"{name} must not contain CR, LF or NUL", field=name)
    return value


def check_publish(name: str | None, publisher_id: str | None) -> None:
    """What any publisher (HTTP or a WebSocket client) may name an event and id it."""
    if name is not None:
        check_field("event", name)
        if name in RESERVED_EVENTS:
            raise InvalidEvent(f"event name {name!r} is reserved", field="event")
    if publisher_id is not None:
        check_field("id", publisher_id)
        if len(publisher_id) > MAX_PUBLISHER_ID:
            raise InvalidEvent(f"'id' longer than {MAX_PUBLISHER_ID} characters", field="id")


def check_text(value: str, field: str) -> str:
    """JSON may smuggle lone surrogates (``"\\ud800"``), which no UTF-8 stream carries."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"'{field}' is not valid Unicode (lone surrogate)",
                         field=field) from None
    return value


def as_data(value: object) -> str:
    """A published JSON payload as event data: a string as it is, any other value as
    its compact JSON text."""
    if not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return check_text(value, "data")


def encode(event_id: str | None, data: str, name: str | None = None) -> bytes:
    """Frame one event: ``id:``, optional ``event:``, one ``data:`` per payload line.

    Without an id (``None``) the client's last event id is left as it was.
    """
    lines = [] if event_id is None else [f"id: {check_field('id', event_id)}"]
    if name:
        lines.append(f"event: {check_field('event', name)}")
    if "\n" in data or "\r" in data:
        lines.extend("data: " + line for line in _LINE_BREAK.split(data))
    else:  # (most payloads are one line: no split)
        lines.append("data: " + data)
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@functools.lru_cache(maxsize=8)  # (a reconnect storm of quiet streams: one id, many times)
def encode_position(event_id: str) -> bytes:
    """The resume point of a client that has no event yet, as a named event with data:
    browsers record an ``id:`` even without data, but clients such as npm's
    ``eventsource`` only when an event is dispatched, so it carries the id as data too."""
    return encode(event_id, json.dumps({"lastEventId": event_id}), POSITION_EVENT)


def encode_retry(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def encode_token_expired(resume_id: str | None) -> bytes:
    """Sent at the token's ``exp``; the client gets a fresh token and resumes from
    ``resume_id`` (the event's own id, so ``e.lastEventId`` has it too)."""
    return encode(resume_id, json.dumps({"reason": "expired", "lastEventId": resume_id}),
                  TOKEN_EXPIRED_EVENT)


def encode_gap(reason: str, last_id: str | None) -> bytes:
    """The signal that replay cannot be complete.  It has no id, so the client's last
    event id stays put until a replayed event moves it."""
    return encode(None, json.dumps({"reason": reason, "lastEventId": last_id}), GAP_EVENT)


#: Most digits of a sequence number: Redis's Lua numbers are doubles, exact to 2**53.
MAX_SEQ_DIGITS = 15


@dataclass(frozen=True, slots=True)
class EventId:
    """A position in one history's order: ``<epoch>-<seq>`` on the wire, or
    ``<shard>.<epoch>-<seq>`` for one of a Redis Cluster history's shards.

    ``epoch`` names the store's (or shard's) life (it changes when the store loses its
    data, so an old id is recognised as unknown instead of being misread); ``seq`` is
    one sequence shared by every channel of the store (or shard), so one id resumes
    all channels of a stream.  EventSource sends it back itself (no preflight,
    whatever its length); a client that sets ``Last-Event-ID`` by hand across origins
    is answered the preflight (``BaseHandler.options``).
    """

    epoch: str
    seq: int
    shard: str = ""  # the Cluster shard ("0".."f"); "" for a store with one order

    def __str__(self) -> str:
        if self.shard:  # (its epoch in base 36: 16 digits in 11 letters)
            return f"{self.shard}.{_base36(int(self.epoch))}-{self.seq}"
        return f"{self.epoch}-{self.seq}"

    @classmethod
    def parse(cls, text: str | None) -> EventId | None:
        """The id ``text`` spells, or None when it cannot be one of ours (empty,
        garbage, or a sequence number no store hands out)."""
        if not text:
            return None
        epoch, _, seq = text.rpartition("-")
        if not epoch or not seq.isdigit() or len(seq) > MAX_SEQ_DIGITS:
            return None
        shard, dot, rest = epoch.partition(".")
        if dot:
            if len(shard) != 1 or shard not in SHARD_NAMES or not rest.isalnum() \
                    or len(rest) > 13 or not rest.isascii():
                return None
            return cls(str(int(rest, 36)), int(seq), shard)
        return cls(epoch, int(seq))


def _base36(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[digit])
        if not number:
            return "".join(reversed(digits))


#: The names of a Redis Cluster history's shards (see ``history/redis_cluster.py``).
SHARD_NAMES = "0123456789abcdef"
#: What joins the per-shard ids of a ``Position`` (free in ids and URL-safe).
POSITION_SEPARATOR = "_"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client stands in a history: one ``EventId`` per shard its channels
    live on.  A store with one order has one shard (``""``), and the text is the id
    itself; a Redis Cluster history's stream of channels on several shards writes
    ``<id>_<id>...``, one per shard, so one ``Last-Event-ID`` resumes each shard
    exactly (at most 16 ids of about 20 bytes each: 300 to 350 bytes in all)."""

    ids: tuple[EventId, ...]

    @classmethod
    def of(cls, ids: Any) -> Position:
        """From ``EventId`` values (or anything with ``epoch``, ``seq``, ``shard``),
        one per shard."""
        return cls(tuple(sorted((EventId(i.epoch, i.seq, i.shard) for i in ids),
                                key=lambda i: i.shard)))

    def __str__(self) -> str:
        return POSITION_SEPARATOR.join(map(str, self.ids))

    def get(self, shard: str) -> EventId | None:
        for i in self.ids:
            if i.shard == shard:
                return i
        return None

    @property
    def single(self) -> EventId | None:
        """The id, when there is one shard."""
        return self.ids[0] if len(self.ids) == 1 else None

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        """The position ``text`` spells, or None (see ``EventId.parse``); ids of a
        store with one order never come several to a position."""
        if not text:
            return None
        if POSITION_SEPARATOR not in text:
            one = EventId.parse(text)
            return None if one is None else cls((one,))
        ids = [EventId.parse(part) for part in text.split(POSITION_SEPARATOR)]
        shards = {i.shard for i in ids if i is not None}
        if None in ids or len(shards) != len(ids) or "" in shards:
            return None
        return cls.of(ids)


class Event:
    """One published message on one channel, with the id the history gave it.

    ``frame`` is computed once, at construction; every subscriber is written the same
    bytes object.  ``seq`` orders events across all channels of one history ``epoch``.
    """

    __slots__ = ("_body", "_json", "_tagged", "channel", "data", "epoch", "frame", "grip", "id",
                 "name", "seq", "shard", "ws")

    def __init__(self, channel: str, data: str, event_id: EventId,
                 name: str | None = None) -> None:
        self.channel = channel
        # Line breaks as EventSource delivers them (LF), so every transport hands the
        # page the same text.
        self.data = data if "\r" not in data else "\n".join(_LINE_BREAK.split(data))
        self.name = name
        self.epoch = event_id.epoch
        self.seq = event_id.seq
        self.shard = event_id.shard
        self.id = str(event_id)
        self.frame = encode(self.id, data, name)
        self._body: bytes | None = None
        self._json: dict[str, object] | None = None
        self._tagged: bytes | None = None
        # its WebSocket message, framed once by transports/websocket.py when first sent
        self.ws: Any = None
        # what a GRIP-held client gets instead of the frame (pushpin.GripItem), when a
        # Pushpin publish on this daemon brought it
        self.grip: Any = None

    @property
    def tagged_frame(self) -> bytes:
        """The frame for channel-aware streams (``?channelEvents=1``): a ``channel``
        event whose data is the channel name, then the event itself, unchanged.  A page
        listens to ``channel`` once, whatever its channels and patterns, and reads it
        in the ``message`` (or named) listener that runs next.  Built on first use,
        once per event."""
        if self._tagged is None:
            self._tagged = encode(None, self.channel, CHANNEL_EVENT) + self.frame
        return self._tagged

    @property
    def event_id(self) -> EventId:
        return EventId(self.epoch, self.seq, self.shard)

    @property
    def body(self) -> bytes:
        """The frame without its ``id:`` line, for a stream whose id is a position
        over several shards (``Subscriber.framed``).  Built on first use."""
        if self._body is None:
            self._body = self.frame[self.frame.index(b"\n") + 1:]
        return self._body

    def as_json(self) -> dict[str, object]:
        """The long-poll representation, built at most once per event."""
        if self._json is None:
            self._json = {"id": self.id, "channel": self.channel,
                          "event": self.name or "message", "data": self.data}
        return self._json

    def __repr__(self) -> str:
        return f"Event(channel={self.channel!r}, id={self.id!r}, name={self.name!r})"


_last_batch: tuple[list[Event] | None, object, bytes] = (None, None, b"")


def joined(events: list[Event], part: Callable[[Event], bytes]) -> bytes:
    """``part`` of each event of a fan-out batch, joined once for every subscriber that
    wants that form (the registry hands every subscriber the same list)."""
    global _last_batch
    batch, made_by, data = _last_batch
    if batch is not events or made_by is not part:
        data = b"".join(part(e) for e in events)
        _last_batch = (events, part, data)
    return data


def _tagged(event: Event) -> bytes:
    return event.tagged_frame


def tagged_frames(events: list[Event]) -> bytes:
    """The channel-aware frames of a fan-out batch (see ``joined``)."""
    return joined(events, _tagged)


def frames(events: list[Event], tagged: bool = False) -> bytes:
    """Some events' frames, plain or channel-aware, for one client."""
    if tagged:
        return b"".join(e.tagged_frame for e in events)
    return b"".join(e.frame for e in events)


def parse_stream(text: str) -> Iterator[dict[str, str]]:
    """Parse an event stream the way the WHATWG algorithm does.

    Used by the tests and by the load client to check what a browser would see.
    Yields one dict per dispatched event with ``event``, ``data`` and ``id`` (the
    last event id at dispatch time); blocks with only an ``id`` update the id
    without dispatching, and ``retry`` is reported as its own pseudo-event.
    """
    last_id = ""
    data: list[str] = []
    name = ""
    for line in _LINE_BREAK.split(text):
        if line == "":
            if data:
                yield {"id": last_id, "event": name or "message", "data": "\n".join(data)}
            data, name = [], ""
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\x00" not in value:
            last_id = value
        elif field == "retry" and value.isdigit():
            yield {"retry": value}


def dumps(value: object) -> bytes:
    """Compact JSON for responses."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
