"""The ZeroMQ broker (``--broker=zmq``): a SUB socket that connects to publishers (or to
the XPUB side of a proxy, ``--zmq-connect``) and/or binds for publishers to connect
(``--zmq-bind``), subscribed to every topic.

A message is multipart: the channel, then the payload — the event's data, or a Pushpin
item (``J`` + JSON, or a TNetString, as pubcontrol sends) — then, optionally, the event
name.  Each daemon stores what it receives in its own history (memory, or Redis beside
it) and delivers it.  ``POST /publish`` here stores and delivers locally, then, with
``--zmq-publish``, sends it through a PUB socket (to a proxy's XSUB) for the other
daemons, with a fourth frame naming this daemon so it skips its own echo.

ZeroMQ PUB/SUB keeps nothing: what is published while a daemon is not connected (or
in the first moments of a connection) is not received by it.
"""

from __future__ import annotations

import secrets
from typing import Any

import zmq
from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.channels import check_channel
from cyclone_sse.checks import check_message
from cyclone_sse.links.zmq import ZmqReader, endpoints
from cyclone_sse.pushpin import item_events, zmq_item
from cyclone_sse.transports.grip import close_held

log = Logger()


class ZmqBroker(Broker):
    """Fan-in from ZeroMQ publishers; each daemon keeps its own history."""

    name = "zmq"
    # every daemon receives every message: a shared history would store each again
    required_history = "memory"
    history_reason = "with --broker=zmq each daemon keeps its own history in memory"

    def __init__(self, registry: Any, history: Any, settings: Any, reactor: Any = None) -> None:
        super().__init__(registry, history, settings, reactor)
        self.me = secrets.token_hex(8).encode()
        context: Any = zmq.Context.instance()
        self.sub = context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        # memory stays bounded: at most --zmq-hwm messages queued, none over --max-body
        # (libzmq drops a peer that sends a larger one; it reconnects)
        self.sub.setsockopt(zmq.RCVHWM, settings.zmq_hwm)
        self.sub.setsockopt(zmq.MAXMSGSIZE, settings.max_body + 4096)
        for endpoint in endpoints(settings.zmq_bind):
            self.sub.bind(endpoint)
        for endpoint in endpoints(settings.zmq_connect):
            self.sub.connect(endpoint)
        self.pub: zmq.Socket[Any] | None = None
        if settings.zmq_publish:
            self.pub = context.socket(zmq.PUB)
            for endpoint in endpoints(settings.zmq_publish):
                self.pub.connect(endpoint)
        self.reader = ZmqReader(self.reactor, self.sub, self._received)
        self.received = 0
        self.rejected = 0

    @classmethod
    def check_options(cls, settings: Any) -> None:
        super().check_options(settings)
        if not endpoints(settings.zmq_connect) and not endpoints(settings.zmq_bind):
            raise ValueError("--broker=zmq: give --zmq-connect and/or --zmq-bind")
        for option in ("zmq_connect", "zmq_bind", "zmq_publish"):
            for endpoint in endpoints(getattr(settings, option)):
                if "://" not in endpoint:
                    raise ValueError(f"--{option.replace('_', '-')}={endpoint}: a ZeroMQ "
                                     "endpoint such as tcp://127.0.0.1:5560")

    def startService(self) -> None:
        super().startService()
        self.reader.start()

    def stopService(self) -> defer.Deferred[None]:
        self.reader.stop()
        if self.pub is not None:
            self.pub.close(linger=0)
        return defer.maybeDeferred(super().stopService)

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "connected": True, "received": self.received,
                "rejected": self.rejected}

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None, grip: Any = None) -> defer.Deferred[Published]:
        d = super().publish(channel, data, name, publisher_id, grip)
        if self.pub is not None:
            self.pub.send_multipart([channel.encode(), data.encode(),
                                     (name or "").encode(), self.me])
        return d

    def _received(self, frames: list[bytes]) -> None:
        if len(frames) >= 4 and frames[3] == self.me:
            return  # published here: already stored and delivered
        try:
            if len(frames) < 2:
                raise ValueError("a message is [channel, payload(, event name)]")
            channel = check_channel(frames[0].decode("utf-8"))
            payload = frames[1]
            if len(payload) > self.settings.max_body:
                raise ValueError(f"larger than --max-body ({self.settings.max_body} bytes)")
            item = zmq_item(payload)
            if item is not None:
                events = [(e.channel, e.data, e.name, e.publisher_id, e.grip)
                          for e in item_events(item, channel)]
            else:
                name = frames[2].decode("utf-8") if len(frames) > 2 and frames[2] else None
                events = [(channel, payload.decode("utf-8"), name, None, None)]
            for event in events:
                check_message(*event[:4])  # (the checks of every path: no history-gap)
        except Exception as exc:
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 1000 == 0:
                log.warn("ignored ZeroMQ message ({count} so far): {error}",
                         count=self.rejected, error=exc)
            return
        self.received += 1
        for channel, data, name, publisher_id, grip in events:
            if grip is not None and grip.closes:  # (for GRIP-held clients only)
                close_held(self.registry, channel, grip)
            else:
                super().publish(channel, data, name, publisher_id, grip)
