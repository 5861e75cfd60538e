"""Drive the application in memory: a real protocol on a StringTransport, a Clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cyclone_sse.app import App
from cyclone_sse.event import parse_stream


def app_with_own_handlers(clock: Clock, **settings: Any) -> App:
    """An application as an --app serving ``GET /`` and ``POST /publish`` with its own
    (empty) subclasses of the stock handlers: the cyclone path the stock routes no
    longer take, to compare their answers with."""
    from cyclone_sse.handlers.publish import PublishHandler
    from cyclone_sse.handlers.subscribe import SubscribeHandler

    class OwnSubscribe(SubscribeHandler):
        pass

    class OwnPublish(PublishHandler):
        pass

    own = {SubscribeHandler: OwnSubscribe, PublishHandler: OwnPublish}

    class OwnApp(App):
        def build_handlers(self) -> list[tuple[Any, ...]]:
            return [(path, own.get(handler, handler), *rest)
                    for path, handler, *rest in super().build_handlers()]

    app = OwnApp(settings, reactor=clock)
    app.start()
    return app


def make_app(**settings: Any) -> App:
    clock = Clock()
    clock.advance(1_000_000)  # a plausible "now" for the history's timestamps
    app = App(settings, reactor=clock)
    app.start()
    return app


class Connection:
    """One client connection to ``app``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.protocol = app.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)

    def send(self, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> Connection:
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.protocol.dataReceived(raw)
        return self

    @property
    def raw(self) -> bytes:
        return self.transport.value()

    def head_and_body(self) -> tuple[int, dict[str, str], bytes]:
        """The answer; nothing written yet ends the reactor turn first (a publish is
        answered after the fan-out at the end of the turn)."""
        if not self.raw:
            self.app.clock.advance(0)
        head, _, body = self.raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, body

    def json(self) -> tuple[int, Any]:
        status, _, body = self.head_and_body()
        return status, json.loads(body)

    def events(self) -> list[dict[str, str]]:
        """What an EventSource would have dispatched so far (but the ``stream-open``
        resume point, which a page rarely listens to)."""
        return [e for e in parse_stream(self.head_and_body()[2].decode())
                if "data" in e and e["event"] != "stream-open"]

    def close(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        self.protocol.connectionLost(Failure(ConnectionDone()))


def subscribe(app: App, query: str, headers: dict[str, str] | None = None) -> Connection:
    return Connection(app).send("GET", "/?" + query, headers=headers)


def publish(app: App, **fields: Any) -> tuple[int, Any]:
    """POST /publish with a JSON body, then let the reactor turn end (the fan-out
    happens there); returns (status, answer)."""
    body = json.dumps(fields).encode()
    answer = Connection(app).send("POST", "/publish", body,
                                  {"Content-Type": "application/json"}).json()
    app.clock.advance(0)
    return answer


def publish_form(app: App, body: str) -> tuple[int, Any]:
    answer = Connection(app).send("POST", "/publish", body.encode(), {
        "Content-Type": "application/x-www-form-urlencoded"}).json()
    app.clock.advance(0)
    return answer


@contextmanager
def instances_of(cls: type) -> Iterator[list[Any]]:
    """Record every instance of ``cls`` built inside the block (how often a lean path
    still built a cyclone handler)."""
    built: list[Any] = []
    original = cls.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    cls.__init__ = counting  # type: ignore[misc]
    try:
        yield built
    finally:
        cls.__init__ = original  # type: ignore[misc]
