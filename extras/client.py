"""Load-test client: many SSE (or WebSocket) subscribers in one process, latency and
completeness.

    uv run python extras/client.py --url http://127.0.0.1:8888 --subscribers 5000 \
        --channels general,cats,dogs --duration 30

Each subscriber opens ``GET /?channels=general&channels=<one of the others>`` (the 2013
test's layout).  Payloads published with ``--publish`` (or by ``extras/bench``) start
with ``<send time> `` so every delivery's latency is known; completeness counts every
event.  asyncio with uvloop keeps 10,000+ streams on one core: each read only counts
events (a C-level ``bytes.count``), and latency is parsed on a sample of streams.
``--websocket`` subscribes over WebSocket instead (the daemon's JSON protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

try:
    import uvloop
except ImportError:  # plain asyncio works, just slower
    uvloop = None

EVENT_MARK = b"\ndata: "


def masked_frame(payload: bytes) -> bytes:
    """A client's text frame (RFC 6455: clients mask what they send)."""
    size = len(payload)
    head = bytes([0x81, 0x80 | size]) if size < 126 else \
        bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Stream(asyncio.Protocol):
    """One SSE subscriber: counts events, and on sampled streams records latencies."""

    MARK = EVENT_MARK

    def __init__(self, load: LoadClient, query: bytes, sample: bool) -> None:
        self.load = load
        self.query = query
        self.sample = sample
        self.events = 0
        self.head = True
        self.tail = b""
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"GET " + self.load.path + self.query + b" HTTP/1.1\r\nHost: load\r\n"  # type: ignore[attr-defined]
                        b"Accept: text/event-stream\r\n\r\n")

    #: What says a WebSocket subscription is live.
    SUBSCRIBED = b'"type": "subscribed"'

    def opened(self, head: bytes) -> None:
        """The response head is in."""
        if not self.connected.done():
            self.connected.set_result(head[9:12])

    def stamp_at(self, text: bytes, at: int) -> int:
        """Where the send time of the event whose mark is at ``at`` starts."""
        return at + len(self.MARK)

    def data_received(self, data: bytes) -> None:
        if self.head:
            data = self.tail + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.tail = data
                return
            self.head = False
            self.tail = b""
            self.opened(data[:end])
            data = data[end + 2:]
        text = self.tail + data
        mark = self.MARK
        count = text.count(mark)
        if count:
            self.events += count
            self.load.delivered += count
            if self.sample:
                now = time.time()
                start = 0
                while True:
                    at = text.find(mark, start)
                    if at < 0:
                        break
                    stamp = self.stamp_at(text, at)
                    stamp_end = text.find(b" ", stamp)
                    try:
                        self.load.latencies.append(now - float(text[stamp:stamp_end]))
                    except ValueError:
                        pass
                    start = at + len(mark)
        # keep just enough bytes that a mark split across two reads is found once
        self.tail = text[1 - len(mark):]
        if not self.connected.done() and self.SUBSCRIBED in text:
            self.connected.set_result(b"101")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed"))
        self.load.lost += 1


class WebSocketStream(Stream):
    """One WebSocket subscriber: the upgrade, one subscribe message, then events (the
    daemon's frames are unmasked JSON text, counted by their opening bytes)."""

    MARK = b'{"type": "event"'
    DATA = b'"data": "'
    PATH = b"/"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        transport.write(b"GET " + self.PATH + b" HTTP/1.1\r\nHost: load\r\n"  # type: ignore[attr-defined]
                        b"Upgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")

    def subscribe_message(self, message: bytes) -> bytes:
        return message

    def opened(self, head: bytes) -> None:
        channels = [v.decode() for k, _, v in (p.partition(b"=")
                                               for p in self.query.split(b"&"))]
        assert self.transport is not None
        self.transport.write(masked_frame(self.subscribe_message(json.dumps(
            {"type": "subscribe", "id": 1, "channels": channels}).encode())))

    def stamp_at(self, text: bytes, at: int) -> int:
        return text.find(self.DATA, at) + len(self.DATA)


class SockJSStream(WebSocketStream):
    """A SockJS session over its WebSocket transport (``--sockjs-prefix=/echo``) that
    speaks the WebSocket protocol inside SockJS frames: each message is a JSON string in
    an ``a[...]`` array, its quotes escaped."""

    MARK = b'{\\"type\\": \\"event\\"'
    DATA = b'\\"data\\": \\"'
    SUBSCRIBED = b'\\"type\\": \\"subscribed\\"'
    PATH = b"/echo/000/" + os.urandom(6).hex().encode() + b"/websocket"

    def subscribe_message(self, message: bytes) -> bytes:
        return json.dumps([message.decode()]).encode()


class SockJSXhrStream(Stream):
    """A SockJS session over its xhr_streaming transport on a prefix whose sessions
    receive ``--sockjs-channels`` (each event's data as one message: ``a["<data>"]``)."""

    MARK = b'a["'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"POST /echo/000/" + os.urandom(8).hex().encode()  # type: ignore[attr-defined]
                        + b"/xhr_streaming HTTP/1.1\r\nHost: load\r\n"
                        b"Content-Length: 0\r\n\r\n")


class LoadClient:
    #: What each subscriber speaks: ``Stream`` (SSE) or ``WebSocketStream``.
    stream_class: type[Stream] = Stream
    #: What an SSE subscriber's request line asks for, before the query.
    path = b"/?"

    def __init__(self, url: str, channels: Sequence[str], sample_every: int = 10) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.channels = list(channels)
        self.sample_every = sample_every
        self.streams: list[Stream] = []
        self.latencies: list[float] = []
        self.delivered = 0
        self.lost = 0
        self.connect_seconds = 0.0

    def query_for(self, n: int) -> bytes:
        first, others = self.channels[0], self.channels[1:]
        parts = [f"channels={first}"]
        if others:
            parts.append(f"channels={others[n % len(others)]}")
        return "&".join(parts).encode()

    async def connect(self, count: int, concurrency: int = 500,
                      headers: bytes = b"") -> None:
        """Open ``count`` more streams, ``concurrency`` at a time; wait for their headers."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with gate:
                stream = self.stream_class(self, self.query_for(n),
                                           n % self.sample_every == 0)
                await loop.create_connection(lambda: stream, self.host, self.port)
                self.streams.append(stream)
                await stream.connected

        base = len(self.streams)
        await asyncio.gather(*(one(base + n) for n in range(count)))
        self.connect_seconds = time.perf_counter() - started

    def close(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()
        self.streams = []

    def reset(self) -> None:
        self.latencies = []
        self.delivered = 0
        for stream in self.streams:
            stream.events = 0


class Publisher:
    """POSTs to /publish over one keep-alive connection; payloads carry the send time."""

    def __init__(self, host: str, port: int, size: int = 100, key: str = "") -> None:
        self.host, self.port, self.size = host, port, size
        # the daemon's --http-secret, sent as a header (no per-request body parsing)
        self.auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def payload(self) -> str:
        stamp = f"{time.time():.6f} "
        return stamp + "x" * max(0, self.size - len(stamp))

    def send(self, channel: str) -> None:
        assert self.writer is not None
        body = f"channel={channel}&message={self.payload()}".encode()
        self.writer.write(b"POST /publish HTTP/1.1\r\nHost: load\r\n%sContent-Type: "
                          b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                          % (self.auth, len(body), body))

    async def answer(self) -> None:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await self.reader.readexactly(length)

    async def publish(self, channel: str) -> None:
        self.send(channel)
        await self.answer()

    async def publish_at(self, channel: str, count: int, rate: float) -> float:
        """Publish ``count`` events at ``rate`` per second, as a busy application does:
        on schedule, without waiting for earlier answers (HTTP pipelining).  Returns the
        seconds until every answer came back."""
        started = time.perf_counter()
        answers = asyncio.ensure_future(self._answers(count))
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send(channel)
        await answers
        return time.perf_counter() - started

    async def _answers(self, count: int) -> None:
        for _ in range(count):
            await self.answer()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(load: LoadClient, expected: int) -> str:
    ms = [v * 1000 for v in load.latencies]
    return (f"{len(load.streams)} streams (connected in {load.connect_seconds:.2f} s), "
            f"delivered {load.delivered}/{expected} "
            f"({100.0 * load.delivered / max(1, expected):.2f}%), latency ms p50 "
            f"{percentile(ms, 0.5):.1f} p99 {percentile(ms, 0.99):.1f} max "
            f"{max(ms) if ms else float('nan'):.1f}, lost connections {load.lost}")


async def main(args: argparse.Namespace) -> None:
    load = LoadClient(args.url, args.channels.split(","), args.sample_every)
    if args.websocket:
        load.stream_class = WebSocketStream
    await load.connect(args.subscribers)
    print(f"connected {len(load.streams)} streams in {load.connect_seconds:.2f} s")
    expected = 0
    if args.publish:
        publisher = Publisher(load.host, load.port, args.size)
        await publisher.open()
        await publisher.publish_at(load.channels[0], args.publish, args.rate)
        expected = args.publish * args.subscribers
        deadline = time.monotonic() + 10
        while load.delivered < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        publisher.close()
    else:
        await asyncio.sleep(args.duration)
    print(summary(load, expected))
    load.close()


def run(main: Any, args: argparse.Namespace) -> None:
    """``asyncio.run(main(args))`` on uvloop when it is installed."""
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main(args))


def cli() -> None:
    parser = argparse.ArgumentParser(description="Open many SSE subscribers and measure them.")
    parser.add_argument("--url", default="http://127.0.0.1:8888")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--channels", default="general,cats,dogs,base,extras")
    parser.add_argument("--publish", type=int, default=0,
                        help="publish this many events to the first channel, then report")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="without --publish: seconds to listen")
    parser.add_argument("--sample-every", type=int, default=10,
                        help="parse latencies on one stream in this many")
    parser.add_argument("--websocket", action="store_true",
                        help="subscribe over WebSocket instead of SSE")
    run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
