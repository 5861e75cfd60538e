"""Publish → deliver latency through each broker, measured end to end.

Starts ``twistd -n cyclone-sse`` with the chosen broker on a free port, opens
``--subscribers`` SSE streams, publishes ``--messages`` events at ``--rate`` per second
(each payload carries its send time) and prints completeness and latency percentiles.

    uv run python extras/bench_latency.py --via redis
    uv run python extras/bench_latency.py --via amqp
    uv run python extras/bench_latency.py --via amqp-stream   # history in a stream
    uv run python extras/bench_latency.py --via http

Redis must run on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (guest/guest).  It is a
benchmark: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint

ROOT = Path(__file__).resolve().parent.parent


def start_daemon(via: str, prefix: str) -> tuple[subprocess.Popen[bytes], int]:
    options = {"redis": ["--broker=redis", f"--redis-prefix={prefix}"],
               "amqp": ["--broker=amqp", f"--amqp-exchange-name={prefix}"],
               "amqp-stream": ["--broker=amqp", "--history=amqp-stream",
                               f"--amqp-exchange-name={prefix}", "--amqp-exchange-type=topic",
                               f"--amqp-stream={prefix}"],
               "http": []}[via]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "cyclone-sse",
         "--port=0", "--heartbeat=0", *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    port = 0
    ready = {"http": 0, "redis": 2, "amqp": 1, "amqp-stream": 1}[via]
    for line in proc.stdout:
        text = line.decode(errors="replace")
        found = re.search(r"starting on (\d+)", text)
        if found:
            port = int(found.group(1))
        if re.search(r"connection to .* is up", text):
            ready -= 1
        if port and ready <= 0:
            return proc, port
    raise SystemExit("the daemon did not start:\n")


class Stream(protocol.Protocol):
    """One SSE subscriber recording (arrival - send time) of every event."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.buffer = b""
        self.headers_done = False

    def connectionMade(self) -> None:
        self.transport.write(b"GET /?channels=bench HTTP/1.1\r\nHost: bench\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.headers_done:
            if b"\r\n\r\n" not in self.buffer:
                return
            self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
            self.headers_done = True
            if self.bench.count_connected():
                self.bench.connected.callback(None)
        *blocks, self.buffer = self.buffer.split(b"\n\n")
        for block in blocks:
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    sent = json.loads(line[6:])
                    if isinstance(sent, dict) and "t" in sent:  # (not stream-open's)
                        self.bench.record(now - sent["t"])


class Bench:
    def __init__(self, subscribers: int, messages: int) -> None:
        self.subscribers = subscribers
        self.expected = subscribers * messages
        self.latencies: list[float] = []
        self.opened = 0
        self.connected: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()

    def count_connected(self) -> bool:
        self.opened += 1
        return self.opened == self.subscribers

    def record(self, latency: float) -> None:
        self.latencies.append(latency)
        if len(self.latencies) == self.expected and not self.done.called:
            self.done.callback(None)


async def publisher(reactor: Any, via: str, port: int, prefix: str) -> Any:
    """A callable publishing one payload through ``via``."""
    if via == "redis":
        import txredisapi

        from cyclone_sse.history.redis_scripts import APPEND
        redis = await txredisapi.Connection("127.0.0.1", 6379, convertNumbers=False)
        sha = await redis.execute_command("SCRIPT", "LOAD", APPEND)
        CLEANUP.append(lambda: redis.execute_command("EVAL", "for _, k in ipairs(redis.call("
                                                     "'KEYS', ARGV[1]..':*')) do redis.call("
                                                     "'DEL', k) end", 0, prefix))
        return lambda payload: redis.execute_command(
            "EVALSHA", sha, 0, prefix, "bench", payload, "", "", 1000, 3600000, 10000,
            128 * 1024 * 1024, 8 * 1024 * 1024)
    if via in ("amqp", "amqp-stream"):
        from txamqp.endpoint import AMQEndpoint
        from txamqp.factory import AMQFactory

        from cyclone_sse.links.amqp import find_spec, make_content
        client = await AMQEndpoint(reactor, "127.0.0.1", 5672, username="guest",
                                   password="guest").connect(AMQFactory(spec=find_spec()))
        channel = await client.channel(1)
        await channel.channel_open()
        CLEANUP.append(lambda: channel.exchange_delete(exchange=prefix))
        if via == "amqp-stream":
            CLEANUP.append(lambda: channel.queue_delete(queue=prefix))
        return lambda payload: channel.basic_publish(exchange=prefix, routing_key="bench",
                                                     content=make_content(payload))
    from twisted.internet.protocol import Protocol

    class Poster(Protocol):
        def dataReceived(self, data: bytes) -> None:
            pass

    conn = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(Poster))

    def post(payload: str) -> None:
        body = json.dumps({"channel": "bench", "data": payload}).encode()
        conn.transport.write(b"POST /publish HTTP/1.1\r\nHost: b\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
    return post


#: Undo what a run created in Redis or RabbitMQ.
CLEANUP: list[Any] = []


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(reactor: Any, args: argparse.Namespace) -> None:
    prefix = "bench-" + secrets.token_hex(3)
    proc, port = start_daemon(args.via, prefix)
    try:
        bench = Bench(args.subscribers, args.messages)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        for _ in range(args.subscribers):
            await endpoint.connect(protocol.Factory.forProtocol(lambda: Stream(bench)))
        await bench.connected
        publish = await publisher(reactor, args.via, port, prefix)
        started = time.time()
        for n in range(args.messages):
            due = started + n / args.rate
            delay = due - time.time()
            if delay > 0:
                await task.deferLater(reactor, delay, lambda: None)
            publish(json.dumps({"t": time.time(), "n": n}))
        timeout = reactor.callLater(args.messages / args.rate + 10, bench.done.cancel)
        try:
            await bench.done
        except defer.CancelledError:
            pass
        if timeout.active():
            timeout.cancel()
        got = bench.latencies
        ms = [1000 * v for v in got]
        print(f"via {args.via}: {args.subscribers} subscribers, {args.messages} messages at "
              f"{args.rate}/s, delivered {len(got)}/{bench.expected} "
              f"({100.0 * len(got) / bench.expected:.1f}%)")
        if ms:
            print(f"  latency ms: p50 {percentile(ms, 0.5):.2f}  p90 {percentile(ms, 0.9):.2f}"
                  f"  p99 {percentile(ms, 0.99):.2f}  max {max(ms):.2f}")
    finally:
        proc.terminate()
        proc.wait(10)
        for undo in CLEANUP:
            await undo()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--via", choices=["redis", "amqp", "amqp-stream", "http"],
                        default="redis")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    os.chdir(ROOT)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
