"""The benchmark: the daemon pinned to CPU 0, this load client on CPU 1.

    uv run python extras/bench/run.py                 # everything, writes RESULTS.md
    uv run python extras/bench/run.py --sizes 1000    # one size, quick

For each N and transport (SSE, then WebSocket) it starts a fresh daemon (HTTP broker,
heartbeats off), connects N subscribers to one channel, measures RSS per idle
connection, then publishes 200 100-byte events at 20/s and reports completeness,
latency and the daemon's CPU time per delivery (user + system, read from /proc, over
the publish phase).  At N = 1,000 it also finds the maximum sustained deliveries/s,
measures a Last-Event-Id replay of 1,000 events to 1,000 reconnecting clients, and
publish throughput through Redis; WebSocket client publishes per second; ZeroMQ input
throughput and the fan-out to GRIP-held streams.  It prints numbers and asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "extras"))

from client import (  # noqa: E402
    LoadClient,
    Publisher,
    SockJSStream,
    SockJSXhrStream,
    WebSocketStream,
    masked_frame,
    percentile,
)
from client import run as run_async  # noqa: E402
from measured import ServerProcess  # noqa: E402

TWISTD = str(Path(sys.executable).parent / "twistd")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class Daemon(ServerProcess):
    """The daemon under test, a twistd process pinned to ``cpu``."""

    def __init__(self, *options: str, cpu: str = "0", port: int = 0) -> None:
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu, TWISTD, "-n", "--pidfile=", "cyclone-sse", f"--port={port}",
             "--heartbeat=0", "--history-size=2000", *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.port = 0
        waiting_for_redis = 2 if "--broker=redis" in options else 0
        for line in self.proc.stdout:
            text = line.decode(errors="replace")
            found = re.search(r"starting on (\d+)", text)
            if found:
                self.port = int(found.group(1))
            if "connection to" in text and " is up" in text:
                waiting_for_redis -= 1
            if self.port and waiting_for_redis <= 0:
                break
        import threading
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def rss_kb(self) -> int:
        return int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1]) * PAGE_KB


async def wait_delivered(load: LoadClient, expected: int, timeout: float) -> float:
    started = time.perf_counter()
    end = time.monotonic() + timeout
    while load.delivered < expected and time.monotonic() < end:
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def fan_out(n: int, results: dict[str, object], websocket: bool = False,
                  sockjs: bool = False, xhr_streaming: bool = False) -> None:
    """``n`` subscribers of one channel (SSE; ``websocket``; ``sockjs``: SockJS sessions
    over its WebSocket transport speaking the WebSocket protocol; ``xhr_streaming``:
    SockJS sessions over xhr_streaming receiving ``--sockjs-channels``), 200 events at
    20/s."""
    daemon = Daemon(*(["--sockjs-prefix=/echo"] if sockjs else []),
                    *(["--sockjs-prefix=/echo", "--sockjs-channels=general"]
                      if xhr_streaming else []))
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=10)
        if websocket or sockjs:
            load.stream_class = SockJSStream if sockjs else WebSocketStream
        if xhr_streaming:
            load.stream_class = SockJSXhrStream
        await asyncio.sleep(0.5)
        rss_before = daemon.rss_kb()
        await load.connect(n, concurrency=256)
        await asyncio.sleep(1.0)
        rss_after = daemon.rss_kb()
        load.reset()  # (a quiet stream's stream-open event is no delivery)
        publisher = Publisher("127.0.0.1", daemon.port, 100)
        await publisher.open()
        cpu_before = daemon.cpu_seconds()
        publish_seconds = await publisher.publish_at("general", 200, 20.0)
        await wait_delivered(load, 200 * n, 60)
        cpu = daemon.cpu_seconds() - cpu_before
        ms = [v * 1000 for v in load.latencies]
        results.update({
            "transport": "SockJS (WebSocket)" if sockjs else
                         "SockJS (xhr_streaming)" if xhr_streaming else
                         "WebSocket" if websocket else "SSE",
            "N": n, "held": len(load.streams) - load.lost,
            # below 20/s the daemon could not keep up (each publish waits for its answer)
            "publish_rate": round(200 / publish_seconds, 1),
            "connect_s": round(load.connect_seconds, 2),
            "complete_pct": round(100.0 * load.delivered / (200 * n), 3),
            "p50_ms": round(percentile(ms, 0.5), 1), "p99_ms": round(percentile(ms, 0.99), 1),
            "max_ms": round(max(ms), 1) if ms else None,
            "cpu_us_per_delivery": round(1e6 * cpu / max(1, load.delivered), 2),
            "rss_kb_per_conn": round((rss_after - rss_before) / n, 1),
        })
        if n == 1000 and not (websocket or sockjs or xhr_streaming):
            results["max_deliveries_per_s"] = await max_rate(load, publisher)
            results["max_deliveries_per_s_8_in_flight"] = await max_rate(load, publisher,
                                                                         window=8)
            results["replay_ms_per_client"] = await replay(daemon)
        publisher.close()
        load.close()
    finally:
        daemon.stop()


async def max_rate(load: LoadClient, publisher: Publisher, seconds: float = 5.0,
                   window: int = 1) -> int:
    """Publish back to back for ``seconds`` with up to ``window`` requests in flight;
    deliveries/s counted when all arrived (negative when some never did)."""
    load.reset()
    started = time.perf_counter()
    published = answered = 0
    while time.perf_counter() - started < seconds:
        while published - answered < window:
            publisher.send("general")
            published += 1
        await publisher.answer()
        answered += 1
    while answered < published:
        await publisher.answer()
        answered += 1
    await wait_delivered(load, published * len(load.streams), 30)
    elapsed = time.perf_counter() - started
    complete = load.delivered / (published * len(load.streams))
    return int(load.delivered / elapsed) if complete > 0.999 else -int(load.delivered / elapsed)


async def replay(daemon: Daemon, events: int = 1000, clients: int = 1000) -> float:
    """Server CPU ms per client to replay ``events`` missed events to ``clients``."""
    import json
    import urllib.request
    body = json.dumps({"channel": "replay", "data": "before"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/publish", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        last_id = json.loads(answer.read())["events"][0]["id"]
    publisher = Publisher("127.0.0.1", daemon.port, 100)
    await publisher.open()
    for _ in range(events):
        await publisher.publish("replay")
    publisher.close()
    load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["replay"], sample_every=10 ** 9)
    load.query_for = lambda n: f"channels=replay&lastEventId={last_id}".encode()  # type: ignore
    cpu_before = daemon.cpu_seconds()
    await load.connect(clients, concurrency=100)
    await wait_delivered(load, events * clients, 60)
    cpu = daemon.cpu_seconds() - cpu_before
    complete = load.delivered == events * clients
    load.close()
    return round(1000 * cpu / clients, 2) if complete else -1.0


async def redis_throughput(results: dict[str, object], events: int = 20000) -> None:
    from publisher import RedisPublisher
    prefix = "bench-" + secrets.token_hex(3)
    daemon = Daemon("--broker=redis", f"--redis-prefix={prefix}", "--redis-raw=")
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=1)
        await load.connect(10)
        redis = RedisPublisher(prefix=prefix, history_size=2000)
        started = time.perf_counter()
        for _ in range(0, events, 1000):
            redis.send_many([("general", f"{time.time():.6f} " + "x" * 80)] * 1000)
        published = time.perf_counter() - started
        await wait_delivered(load, events * 10, 60)
        elapsed = time.perf_counter() - started
        results.update({"redis_publish_per_s": int(events / published),
                        "redis_delivered_events_per_s": int(events / elapsed),
                        "redis_complete_pct": round(100.0 * load.delivered / (events * 10), 3)})
        keys = redis.command("KEYS", prefix + ":*") or []
        if keys:
            redis.command("DEL", *keys)
        redis.close()
        load.close()
    finally:
        daemon.stop()


async def across_cores(results: dict[str, object], n: int = 1000) -> None:
    """Max deliveries/s through Redis: one daemon on one core, then two daemons sharing
    one port (SO_REUSEPORT), one per core.  The client is not pinned here: on this
    2-core machine it shares the cores with the daemons."""
    import socket
    os.sched_setaffinity(0, {0, 1})
    try:
        for label, cpus in (("one_daemon_redis_deliveries_per_s", ["0"]),
                            ("two_daemons_reuseport_deliveries_per_s", ["0", "1"])):
            prefix = "bench-" + secrets.token_hex(3)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            daemons = [Daemon("--broker=redis", f"--redis-prefix={prefix}", "--redis-raw=",
                              "--reuse-port", cpu=cpu, port=port) for cpu in cpus]
            try:
                load = LoadClient(f"http://127.0.0.1:{port}", ["general"], sample_every=10 ** 9)
                await load.connect(n, concurrency=100)
                publisher = Publisher("127.0.0.1", port, 100)
                await publisher.open()
                results[label] = await max_rate(load, publisher)
                publisher.close()
                load.close()
            finally:
                for daemon in daemons:
                    daemon.stop()
                from publisher import RedisPublisher
                redis = RedisPublisher(prefix=prefix)
                keys = redis.command("KEYS", prefix + ":*") or []
                if keys:
                    redis.command("DEL", *keys)
                redis.close()
    finally:
        os.sched_setaffinity(0, {1})


async def client_publishes(results: dict[str, object], count: int = 20000,
                           window: int = 16) -> None:
    """WebSocket client publishes answered per second through one daemon: one client,
    subscribed to a ``+publish`` channel (so it also receives each event), up to
    ``window`` publishes in flight; 10 more WebSocket subscribers of the channel."""
    import json
    daemon = Daemon("--policies=chat.*=public+publish", "--ws-publish-rate=1000000")
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["chat.room"], sample_every=1)
        load.stream_class = WebSocketStream
        await load.connect(10)
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: "
                     b"Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(masked_frame(json.dumps({"type": "subscribe", "id": 0,
                                              "channels": ["chat.room"]}).encode()))
        await reader.readuntil(b'"subscribed"')
        frames = [masked_frame(json.dumps({"type": "publish", "id": i, "channel": "chat.room",
                                           "data": "x" * 100}).encode())
                  for i in range(window)]
        cpu_before = daemon.cpu_seconds()
        started = time.perf_counter()
        sent = answered = 0
        tail = b""
        while answered < count:
            while sent < count and sent - answered < window:
                writer.write(frames[sent % window])
                sent += 1
            data = tail + await reader.read(65536)
            answered += data.count(b'"type": "published"')
            tail = data[-20:]
        elapsed = time.perf_counter() - started
        cpu = daemon.cpu_seconds() - cpu_before
        await wait_delivered(load, count * 10, 30)
        results.update({"ws_client_publishes_per_s": int(count / elapsed),
                        "ws_client_publish_cpu_us": round(1e6 * cpu / count, 1),
                        "ws_client_publish_complete_pct":
                            round(100.0 * load.delivered / (count * 10), 3)})
        writer.close()
        load.close()
    finally:
        daemon.stop()


async def zmq_throughput(results: dict[str, object], events: int = 20000) -> None:
    """ZeroMQ input: a pyzmq PUB connected to the daemon's bound SUB sends ``events``
    messages as fast as it can; 10 SSE subscribers; events/s delivered."""
    import socket

    import zmq
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    daemon = Daemon("--broker=zmq", f"--zmq-bind={endpoint}")
    context = zmq.Context()
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=1)
        await load.connect(10)
        pub = context.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)  # queue rather than drop: count what is delivered
        pub.connect(endpoint)
        while load.delivered == 0:  # until the connection is up (ZeroMQ drops before)
            pub.send_multipart([b"general", f"{time.time():.6f} probe".encode()])
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        load.reset()
        payload = "x" * 80
        started = time.perf_counter()
        for n in range(events):
            pub.send_multipart([b"general", f"{time.time():.6f} {payload}".encode()])
            if n % 1000 == 999:
                await asyncio.sleep(0)  # let the subscribers read
        sent = time.perf_counter() - started
        await wait_delivered(load, events * 10, 60)
        elapsed = time.perf_counter() - started
        results.update({"zmq_sent_per_s": int(events / sent),
                        "zmq_delivered_events_per_s": int(load.delivered / 10 / elapsed),
                        "zmq_complete_pct": round(100.0 * load.delivered / (events * 10), 3)})
        pub.close(linger=0)
        load.close()
    finally:
        context.destroy(linger=0)
        daemon.stop()


def grip_backend() -> tuple[int, object]:
    """A backend that holds every request as an event stream on ``general`` (GRIP), as
    django-eventstream holds one: ``build-id`` with an ``id_format``."""
    import http.server
    import threading

    class Hold(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            for name, value in (("Content-Type", "text/event-stream"),
                                ("Grip-Hold", "stream"),
                                ("Grip-Channel", "general; filter=build-id"),
                                ("Grip-Set-Meta", 'id_format="general:%(general)s"'),
                                ("Content-Length", "3")):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b":\n\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hold)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], server


class PushpinPublisher(Publisher):
    """Publishes Pushpin items to ``/publish/`` as django-eventstream does: an
    ``http-stream`` content with ``%I`` for the id, ``build-id``, ``id`` and ``prev-id``."""

    sent = 0

    def send(self, channel: str) -> None:
        assert self.writer is not None
        self.sent += 1
        item = {"channel": channel, "id": str(self.sent), "prev-id": str(self.sent - 1),
                "formats": {"http-stream": {
                    "content": f"event: message\nid: %I\ndata: {self.payload()}\n\n",
                    "content-filters": ["build-id"]}}}
        body = json.dumps({"items": [item]}).encode()
        self.writer.write(b"POST /publish/ HTTP/1.1\r\nHost: load\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))


async def grip_fan_out(results: dict[str, object], n: int = 1000,
                       items: bool = False) -> None:
    """CPU per delivery to ``n`` GRIP-held event streams (``--grip-proxy``), of events
    published on ``/publish`` or (``items``) of Pushpin items on ``/publish/``."""
    port, server = grip_backend()
    daemon = Daemon(f"--grip-proxy=/api/=http://127.0.0.1:{port}")
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=10)
        load.path = b"/api/stream?"
        await load.connect(n, concurrency=64)
        await asyncio.sleep(1.0)
        load.reset()
        publisher = (PushpinPublisher if items else Publisher)("127.0.0.1", daemon.port, 100)
        await publisher.open()
        cpu_before = daemon.cpu_seconds()
        await publisher.publish_at("general", 200, 20.0)
        await wait_delivered(load, 200 * n, 60)
        cpu = daemon.cpu_seconds() - cpu_before
        ms = [v * 1000 for v in load.latencies]
        kind = "grip_items" if items else "grip"
        results.update({
            f"{kind}_streams_held": len(load.streams) - load.lost,
            f"{kind}_fan_out_cpu_us_per_delivery": round(1e6 * cpu / max(1, load.delivered),
                                                         2),
            f"{kind}_fan_out_p99_ms": round(percentile(ms, 0.99), 1),
            f"{kind}_complete_pct": round(100.0 * load.delivered / (200 * n), 3)})
        publisher.close()
        load.close()
    finally:
        daemon.stop()
        server.shutdown()  # type: ignore[attr-defined]


async def grip_items_fan_out(results: dict[str, object]) -> None:
    """``grip_fan_out`` of Pushpin items (``build-id``), as django-eventstream publishes."""
    await grip_fan_out(results, items=True)


def table(rows: list[dict[str, object]], extra: dict[str, object]) -> str:
    lines = ["| transport | N subscribers | held | connect s | achieved msgs/s | delivered % "
             "| p50 ms | p99 ms | max ms | server CPU µs/delivery | RSS KB/idle conn |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['transport']} | {r['N']:,} | {r['held']:,} | {r['connect_s']} "
                     f"| {r['publish_rate']} "
                     f"| {r['complete_pct']} "
                     f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} "
                     f"| {r['cpu_us_per_delivery']} | {r['rss_kb_per_conn']} |")
    lines.append("")
    for key, value in extra.items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


JWT_SECRET = "bench-secret-of-at-least-thirty-two-bytes"
PUBLISH_KEY = "bench-publish-key"
POLICIES = ("--policies=user.*=token,private-*=deny,closed.*=deny", f"--jwt-secret={JWT_SECRET}",
            f"--http-secret={PUBLISH_KEY}")


def bench_token(channels: list[str], ttl: int = 3600) -> str:
    sys.path.insert(0, str(ROOT))
    from extras.publisher import make_token
    return make_token(JWT_SECRET, sub="bench", channels=channels, ttl=ttl)


async def subscribes(query: str, options: tuple[str, ...], n: int = 5000) -> dict[str, float]:
    """Connect ``n`` streams (128 at a time) with ``query``: subscribes/s, CPU µs each."""
    daemon = Daemon(*options)
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["x"], sample_every=10 ** 9)
        load.query_for = lambda _: query.encode()  # type: ignore[method-assign]
        await asyncio.sleep(0.5)
        cpu_before = daemon.cpu_seconds()
        await load.connect(n, concurrency=128)
        cpu = daemon.cpu_seconds() - cpu_before
        held = len(load.streams) - load.lost
        load.close()
        return {"per_s": round(held / load.connect_seconds), "cpu_us": round(1e6 * cpu / n)}
    finally:
        daemon.stop()


async def fan_out_cpu(channel: str, options: tuple[str, ...], key: str = "",
                      n: int = 1000) -> float:
    """Server CPU µs per delivery: ``n`` subscribers of ``channel`` (a name or pattern),
    200 events of 100 bytes at 20/s to ``general``."""
    daemon = Daemon(*options)
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", [channel], sample_every=10)
        await load.connect(n, concurrency=256)
        await asyncio.sleep(1.0)
        load.reset()  # (a quiet stream's stream-open event is no delivery)
        publisher = Publisher("127.0.0.1", daemon.port, 100, key=key)
        await publisher.open()
        cpu_before = daemon.cpu_seconds()
        await publisher.publish_at("general", 200, 20.0)
        await wait_delivered(load, 200 * n, 60)
        cpu = daemon.cpu_seconds() - cpu_before
        complete = load.delivered == 200 * n
        publisher.close()
        load.close()
        return round(1e6 * cpu / max(1, load.delivered), 2) if complete else -1.0
    finally:
        daemon.stop()


def verify_us(count: int = 20000) -> float:
    """In-process µs to verify one HS256 token (TokenVerifier.verify)."""
    sys.path.insert(0, str(ROOT))
    from cyclone_sse.auth.tokens import TokenVerifier
    verifier = TokenVerifier(JWT_SECRET)
    token = bench_token(["user.*"])
    started = time.perf_counter()
    for _ in range(count):
        verifier.verify(token)
    return round(1e6 * (time.perf_counter() - started) / count, 1)


async def auth_costs(results: dict[str, object]) -> None:
    """What private channels cost: subscribes with and without a token, fan-out with
    policies configured (exact and pattern subscribers), one token verification."""
    token = bench_token(["user.*"])
    plain = await subscribes("channels=general", ())
    with_jwt = await subscribes(f"channels=user.feed&token={token}", POLICIES)
    results.update({"subscribes_per_s_no_token": plain["per_s"],
                    "subscribe_cpu_us_no_token": plain["cpu_us"],
                    "subscribes_per_s_jwt": with_jwt["per_s"],
                    "subscribe_cpu_us_jwt": with_jwt["cpu_us"],
                    "jwt_verify_us": verify_us()})
    for name, channel in (("exact", "general"), ("pattern", "gen*")):
        results[f"fan_out_cpu_us_{name}_no_policies"] = await fan_out_cpu(channel, ())
        results[f"fan_out_cpu_us_{name}_policies"] = await fan_out_cpu(
            channel, POLICIES, key=PUBLISH_KEY)


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {1})
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows, extra = [], {}
    if args.auth:
        auth: dict[str, object] = {}
        await auth_costs(auth)
        print(auth, flush=True)
        extra.update(auth)
    for n in args.sizes:
        for websocket in (False, True) if args.websocket else (False,):
            result: dict[str, object] = {}
            await fan_out(n, result, websocket)
            print(result, flush=True)
            for key in ("max_deliveries_per_s", "max_deliveries_per_s_8_in_flight",
                        "replay_ms_per_client"):
                if key in result:
                    extra[key] = result.pop(key)
            rows.append(result)
    sections = ((args.websocket, (client_publishes,)),
                (args.pushpin, (zmq_throughput, grip_fan_out, grip_items_fan_out)),
                (args.redis, (redis_throughput, across_cores)))
    for wanted, measures in sections:
        if wanted:
            found: dict[str, object] = {}
            for measure in measures:
                await measure(found)
            print(found, flush=True)
            extra.update(found)
    text = table(rows, extra)
    print(text)
    if args.write:
        (HERE / "RESULTS.md").write_text(
            "# Benchmark results\n\nProduced by `uv run python extras/bench/run.py` on the "
            "project's 2-core machine (daemon on CPU 0, client on CPU 1, one channel, "
            "100-byte payloads, 200 events at 20/s).\n\n" + text)


def cli() -> None:
    parser = argparse.ArgumentParser(description="cyclone-sse benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 19000])
    parser.add_argument("--no-redis", dest="redis", action="store_false")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--no-auth", dest="auth", action="store_false",
                        help="skip the private-channels costs")
    parser.add_argument("--no-websocket", dest="websocket", action="store_false",
                        help="skip the WebSocket rows and client publishes")
    parser.add_argument("--no-pushpin", dest="pushpin", action="store_false",
                        help="skip ZeroMQ input and GRIP-held streams")
    run_async(main, parser.parse_args())


if __name__ == "__main__":
    cli()
