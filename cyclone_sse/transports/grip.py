"""The GRIP-held stream (``--grip-proxy``): a client held open for a backend, written
with what is published to its ``Grip-Channel`` channels as Pushpin writes it — a
Pushpin item's ``http-stream`` content as published, after the content filters
(``build-id``, ``skip-self``, ``skip-users``, ``require-sub``), its ``action: close``,
and ``prev-id`` gaps recovered from the backend's ``Grip-Link``; any other event as an
SSE frame (``text/event-stream``) or its data."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from cyclone_sse.event import Event
from cyclone_sse.grip import Hold
from cyclone_sse.history.base import Replay
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.pushpin import CONTINUED, GripItem
from cyclone_sse.registry import ChannelRegistry, Counters
from cyclone_sse.transports.stream import StreamSubscriber

#: What ``build-id`` replaces in content: ``%I`` (the id) and ``%%`` (a ``%``).
_CONTENT_ESCAPES = re.compile(rb"%(I|%)")
#: ``item_bytes``' answer for an ``action: close``.
CLOSE = b"\x00close"
#: What an ``id_format`` holds: ``%(channel)s`` and ``%%``.
_ID_FORMAT = re.compile(r"%\(([^)]*)\)s|%%")


#: The channels each ``id_format`` names, and the ids built from it, by (format, the
#: last ids of those channels): the held clients of one channel share their ids, so an
#: id is built once per publish, not once per client.
_format_names: dict[str, tuple[str, ...]] = {}
_built_ids: dict[tuple[str, tuple[str, ...]], bytes] = {}


def build_id(id_format: str, last_ids: dict[str, str]) -> bytes:
    """The id ``build-id`` writes (UTF-8): ``id_format`` (Grip-Set-Meta's) with each
    ``%(channel)s`` the last id of that channel."""
    names = _format_names.get(id_format)
    if names is None:
        if len(_format_names) >= 256:
            _format_names.clear()
        names = _format_names[id_format] = tuple(
            m.group(1) for m in _ID_FORMAT.finditer(id_format) if m.group(1) is not None)
    key = (id_format, tuple(last_ids.get(name, "") for name in names))
    built = _built_ids.get(key)
    if built is None:
        if len(_built_ids) >= 1024:
            _built_ids.clear()
        built = _built_ids[key] = _ID_FORMAT.sub(
            lambda m: last_ids.get(m.group(1), "") if m.group(1) is not None else "%",
            id_format).encode("utf-8")
    return built


#: Contents with their id built in, by (content, id): the holds of one channel share
#: an id, so a content is built once per publish, not once per held client.
_built: dict[tuple[bytes, bytes], bytes] = {}


def with_id(content: bytes, built: bytes) -> bytes:
    """``content`` with ``%I`` as ``built`` and ``%%`` as ``%`` (``build-id``)."""
    key = (content, built)
    found = _built.get(key)
    if found is None:
        if len(_built) >= 256:
            _built.clear()
        found = _built[key] = _CONTENT_ESCAPES.sub(
            lambda m: built if m.group(1) == b"I" else b"%", content)
    return found


#: Held streams alike in all an item's bytes depend on, by what they are alike in, and
#: the last item's bytes with the shape of the hold that got them: the holds of one
#: channel, from one backend, get an item in turn, and all but the first take the
#: bytes the first one made.
_shapes: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_given: list[Any] = [None, None, None]


def shape_of(channels: list[str], filters: dict[str, frozenset[str]],
             meta: dict[str, str]) -> tuple[Any, ...] | None:
    """What a hold of one channel gets of an item depends on: that channel, its
    filters and the hold's meta (one object for all holds alike); None for a hold of
    several channels (its ids name the others' last ids)."""
    if len(channels) != 1:
        return None
    key = (channels[0], filters.get(channels[0], frozenset()), tuple(sorted(meta.items())))
    shape = _shapes.get(key)
    if shape is None:
        if len(_shapes) >= 1024:
            _shapes.clear()
        shape = _shapes[key] = key
    return shape


def passes(item: GripItem, filters: frozenset[str], meta: dict[str, str],
           channels: list[str]) -> bool:
    """Whether a held client with these channel ``filters``, ``meta`` and ``channels``
    gets ``item``: not when the item needs a content filter the client's channel did
    not ask for, nor when a message filter skips it."""
    if not item.filters <= filters:
        return False
    if not filters or not item.meta:  # (no message filter, or nothing to filter on)
        return not ("require-sub" in filters and item.meta_value("require_sub") not in
                    channels)
    user = meta.get("user")
    if "skip-self" in filters and user is not None and item.meta_value("sender") == user:
        return False
    if "skip-users" in filters and user is not None and \
            user in (item.meta_value("skip_users") or "").split(","):
        return False
    return not ("require-sub" in filters and item.meta_value("require_sub") not in channels)


class GripHeld:
    """A subscriber held for a GRIP backend (a stream, a WebSocket): a published
    ``action: close`` reaches it through ``close_held``."""

    def close_for(self, channel: str, item: GripItem) -> None:
        """A published close on ``channel``: end the connection, unless the item's
        filters skip this client."""
        raise NotImplementedError


@implementer(ISubscriber)
class GripStreamSubscriber(StreamSubscriber, GripHeld):
    """A held GRIP stream: the backend's head and body, then what is published, and the
    keep-alive data when nothing was written for a while.  ``recover(channel)`` is
    called when a channel's ``prev-id`` shows a gap (the handler asks the backend's
    next link; the items until it answers are dropped, as its answer holds them)."""

    def __init__(self, transport: Any, counters: Counters, max_pending: int, head: bytes,
                 sse: bool, clock: Any, hold: Hold,
                 recover: Callable[[str], None] | None = None) -> None:
        super().__init__(transport, counters, max_pending, head)
        self.sse = sse
        self.wrote = False
        self.channels = list(hold.channels)
        self.filters = dict(hold.filters)
        self.meta = dict(hold.meta)
        self.last_ids = dict(hold.prev_ids)  # the last id written, by channel
        self.shape = shape_of(self.channels, self.filters, self.meta)
        self.next_link = hold.next_link  # where a gap is recovered from (it may move)
        self.recover = recover
        self.recovering: set[str] = set()
        self._keep_alive: LoopingCall | None = None
        if hold.keep_alive:
            data = hold.keep_alive
            self._keep_alive = LoopingCall(self._idle, data)
            self._keep_alive.clock = clock
            self._keep_alive.start(hold.keep_alive_every, now=False)

    def render(self, events: list[Event]) -> tuple[bytes, bool]:
        """The bytes ``events`` give this client, and whether an item closes it."""
        out = []
        for event in events:
            item = event.grip
            if item is None:
                out.append(event.frame if self.sse else event.data.encode("utf-8"))
            elif item is not CONTINUED:
                content = self.item_bytes(event.channel, item)
                if content is CLOSE:
                    return b"".join(out), True
                if content:
                    out.append(content)
        return b"".join(out), False

    def item_bytes(self, channel: str, item: GripItem) -> bytes | None:
        """What one Pushpin item on ``channel`` gives this client (``CLOSE``: an
        ``action: close`` for it), after its ``prev-id`` and filters."""
        if channel in self.recovering:
            return None  # (the backend's answer holds it)
        last = self.last_ids.get(channel)
        if item.prev_id is not None and last is not None and item.prev_id != last \
                and self.recover is not None and self.next_link:
            self.recovering.add(channel)
            self.recover(channel)
            return None
        shape = self.shape
        if item.id is not None:
            self.last_ids[channel] = item.id
            if _given[0] is item and _given[1] is shape and shape is not None:
                return _given[2]  # (what the hold before this one got: the same)
        elif "build-id" in item.filters:
            shape = None  # (its id is this client's own last one: not shared)
        if not passes(item, self.filters.get(channel, frozenset()), self.meta,
                      self.channels):
            given: bytes | None = None
        elif item.close:
            given = CLOSE
        elif "build-id" in item.filters:
            id_format = self.meta.get("id_format") or f"%({channel})s"
            given = with_id(item.content or b"", build_id(id_format, self.last_ids))
        else:
            given = item.content or b""
        if shape is not None:
            _given[:] = [item, shape, given]
        return given

    def close_for(self, channel: str, item: GripItem) -> None:
        if item.close and self.live and not self.closed and \
                self.item_bytes(channel, item) is CLOSE:
            self.transport.loseConnection()

    def deliver(self, events: list[Event], frame: bytes) -> None:
        self.wrote = True
        if not self.live:
            if not self.hold(events):
                self._overflow()
            return
        if self.sse and events[-1].grip is None and events[0].grip is None and (
                len(events) < 3 or not any(e.grip for e in events)):
            super().deliver(events, frame)  # (no Pushpin item: the one shared frame)
            return
        rest = self.unseen(events)
        if rest is None and len(events) == 1 and events[0].grip is not None:
            data = self.item_bytes(events[0].channel, events[0].grip)  # (the usual case)
            close = data is CLOSE
            if close:
                data = None
        else:
            data, close = self.render(events if rest is None else rest)
        if data:
            self.write(data)
        if close and not self.closed:
            self.transport.loseConnection()

    def recovered(self, channel: str, body: bytes, prev_id: str | None,
                  next_link: str | None = None, done: bool = True) -> None:
        """A page of the backend's answer to a recovery: written; when it is the last
        (``done``), the channel is followed again from ``prev_id`` (its new
        ``prev-id``), and recovered from ``next_link`` the next time."""
        if done:
            self.recovering.discard(channel)
            if prev_id is not None:
                self.last_ids[channel] = prev_id
            if next_link:
                self.next_link = next_link
        if body and not self.closed:
            self.write(body)

    def start_live(self, replay: Replay, last_id: str | None) -> None:
        events = self.release(replay, last_id)  # (none: a GRIP hold resumes from nothing)
        data, close = self.render(events)
        head, self.head = self.head, b""
        if not self.closed:
            self.write(head + data)
            if close:
                self.transport.loseConnection()

    def _idle(self, data: bytes) -> None:
        if not self.wrote and self.live and not self.closed:
            self.write(data)
        self.wrote = False

    def heartbeat(self) -> None:
        pass  # GRIP streams send the backend's keep-alive data, or nothing

    def disconnected(self) -> None:
        super().disconnected()
        if self._keep_alive is not None and self._keep_alive.running:
            self._keep_alive.stop()


def close_held(registry: ChannelRegistry, channel: str, item: GripItem) -> defer.Deferred[None]:
    """An item's ``action: close`` (from any Pushpin publish path): the GRIP-held
    streams and WebSockets on ``channel`` end, once what was published before it is
    written.  It publishes no event: a close means nothing to other subscribers."""
    def close() -> None:
        for subscriber in registry.subscribers_of(channel):
            if isinstance(subscriber, GripHeld):
                subscriber.close_for(channel, item)

    if registry.fan_out_pending:
        registry.after_fan_out(close)
    else:
        close()
    return defer.succeed(None)
