"""Fault-test helpers shared by the Sentinel and Cluster tests: a sequence-numbered
publisher, a reconnecting EventSource, and the exactly-once-or-gap check."""

from __future__ import annotations

import json
import threading
import time

from tests.daemon import DEADLINE, Daemon, SSEClient


class Publisher(threading.Thread):
    """Publishes "0", "1", ... to channel ``seq`` (or to ``channels`` in turn) one at a
    time, as fast as answers come, recording which were acknowledged (200) and which
    were refused, with when."""

    def __init__(self, daemon: Daemon, channels: tuple[str, ...] = ("seq",)) -> None:
        super().__init__(daemon=True)
        self.daemon_under_test = daemon
        self.channels = channels
        self.acknowledged: dict[int, str] = {}  # number -> event id
        self.refused: list[tuple[float, int]] = []  # (when, status)
        self.answered: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            try:
                channel = self.channels[n % len(self.channels)]
                status, body = self.daemon_under_test.request(
                    "POST", "/publish", json.dumps({"channel": channel, "data": str(n)}),
                    {"Content-Type": "application/json"})
            except OSError:
                status, body = 0, None
            now = time.monotonic()
            if status == 200:
                self.acknowledged[n] = body["events"][0]["id"]
                self.answered.append(now)
            else:
                self.refused.append((now, status))
            n += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self.stopping.set()
        self.join(DEADLINE)


class Browser:
    """An EventSource: reads the stream, and when the daemon closes it, reconnects with
    the last event id it saw, as a browser does."""

    def __init__(self, port: int, last_id: str | None = None,
                 query: str = "channels=seq") -> None:
        self.port = port
        self.query = query
        self.events: list[dict[str, str]] = []
        self.last_id = last_id
        self.reconnects = 0
        self.client = self._open()

    def _open(self) -> SSEClient:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        client = SSEClient(self.port, self.query, headers)
        client.sock.settimeout(0.2)
        return client

    def read_until(self, until: float) -> list[dict[str, str]]:
        """Everything received until ``until`` (monotonic), gaps included."""
        from cyclone_sse.event import parse_stream
        while time.monotonic() < until:
            try:
                self.client.buffer += self.client._recv()
            except TimeoutError:
                continue
            except (EOFError, ConnectionResetError):
                self._take(parse_stream(self.client._complete()))
                self.client.close()
                self.reconnects += 1
                self.client = self._open()
                continue
        self._take(parse_stream(self.client._complete()))
        self.client.buffer = b""
        return [e for e in self.events if e["event"] != "stream-open"]

    def _take(self, parsed: object) -> None:
        for event in parsed:  # type: ignore[attr-defined]
            if "data" in event:
                self.events.append(event)
                if event["id"]:
                    self.last_id = event["id"]

    def close(self) -> None:
        self.client.close()


def check_exactly_once_or_gap(events, acknowledged):
    """Every acknowledged number arrived exactly once, unless a history-gap came."""
    numbers = [int(e["data"]) for e in events if e["event"] == "message"]
    gaps = [e for e in events if e["event"] == "history-gap"]
    assert len(numbers) == len(set(numbers)), "an event arrived twice"
    missing = set(acknowledged) - set(numbers)
    assert not missing or gaps, f"{len(missing)} acknowledged events never arrived: " \
        f"{sorted(missing)[:10]} (ids {[acknowledged[n] for n in sorted(missing)[:3]]}; " \
        f"{len(numbers)} received)" if isinstance(acknowledged, dict) else \
        f"{len(missing)} acknowledged events never arrived: {sorted(missing)[:10]}"
    ids = [e["id"] for e in events if e["event"] == "message"]
    assert len(ids) == len(set(ids)), "an id named two events"
    return numbers, gaps
