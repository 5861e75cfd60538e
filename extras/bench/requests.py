"""The request-path benchmark: what a publish and a new subscription cost, daemon on CPU 0,
client on CPU 1 (as extras/bench/run.py).

    uv run python extras/bench/requests.py            # every workload
    uv run python extras/bench/requests.py one per-user --count 2000
    uv run python extras/bench/requests.py one nchan --rounds 5   # best and median of 5

Workloads (each on a fresh daemon; numbers are requests/s and the daemon's CPU per
request, from /proc):

one          one publisher waiting for each answer, 10 subscribers on one channel
concurrent   16 publishers on keep-alive connections, each waiting for its answers
pipelined    16 publishers, each with 16 requests in flight (HTTP pipelining)
per-user     10,000 subscribers each on its own channel, 2 events published to each
patterns     10,000 subscribers each on its own pattern p<i>.*, one event to each p<i>.x
             (beside: the same with 10,000 exact channels)
redis        "one" through --broker=redis (history in Redis)
amqp         "one" through --broker=amqp
batch        one publisher, 100 events per request (the JSON list body), 10 subscribers
connect      10,000 subscribers connecting, 128 at a time; and the same resuming with a
             Last-Event-ID that replays 2 events each
nchan        "one" (in memory and with nchan's Redis store), "per-user" and "connect"
             against nginx + nchan (extras/bench/nchan.py),
             in the same run, when Debian's libnginx-mod-nchan is installed
floor        "per-user" against a bare Twisted protocol that does only the I/O of a
             publish (extras/bench/floor.py): what Twisted costs before any work

The per-user rows also split the CPU into user and system time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import floor  # noqa: E402
import nchan  # noqa: E402
from client import LoadClient, Publisher  # noqa: E402
from client import run as run_async  # noqa: E402
from run import Daemon, wait_delivered  # noqa: E402


class NchanPublisher(Publisher):
    """Publishes as nchan takes it: the channel in the URL, the body as the message."""

    def send(self, channel: str) -> None:
        assert self.writer is not None
        body = self.payload().encode()
        self.writer.write(b"POST /publish?channel=%s HTTP/1.1\r\nHost: load\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (channel.encode(), len(body), body))


async def timed(daemon: Daemon, work: object) -> tuple[float, float]:
    """(seconds, daemon CPU seconds) of awaiting ``work``."""
    cpu, started = daemon.cpu_seconds(), time.perf_counter()
    await work  # type: ignore[misc]
    return time.perf_counter() - started, daemon.cpu_seconds() - cpu


def rate_row(name: str, count: int, seconds: float, cpu: float, unit: str = "publish",
             **extra: object) -> dict[str, object]:
    """One result: ``unit``s per second and the daemon's CPU µs per ``unit``."""
    row: dict[str, object] = {"workload": name, "unit": unit, "per_s": int(count / seconds),
                              "cpu_us_each": round(1e6 * cpu / count, 1)}
    row.update(extra)
    return row


async def publishers(daemon: Daemon, count: int) -> list[Publisher]:
    kind = NchanPublisher if isinstance(daemon, nchan.Nchan) else Publisher
    found = [kind("127.0.0.1", daemon.port, 100) for _ in range(count)]
    for publisher in found:
        await publisher.open()
    return found


async def ready(daemon: Daemon) -> None:
    """Until /readyz says the daemon's broker and history are reachable."""
    import urllib.error
    import urllib.request
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/readyz") as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError:
            pass
        await asyncio.sleep(0.05)


async def one(options: tuple[str, ...] = (), count: int = 5000,
              name: str = "one", server: object = None) -> dict[str, object]:
    daemon = server() if callable(server) else Daemon(*options)
    try:
        if not isinstance(daemon, nchan.Nchan):
            await ready(daemon)
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=10)
        await load.connect(10)
        load.reset()  # (each stream's stream-open event is no delivery)
        [publisher] = await publishers(daemon, 1)

        async def run() -> None:
            for _ in range(count):
                await publisher.publish("general")
        seconds, cpu = await timed(daemon, run())
        await wait_delivered(load, count * 10, 30)
        delivered = load.delivered
        load.close()
        return rate_row(name, count, seconds, cpu, complete=delivered == count * 10,
                        delivered=delivered)
    finally:
        daemon.stop()


async def concurrent(count: int = 20000, clients: int = 16) -> dict[str, object]:
    daemon = Daemon()
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=10)
        await load.connect(10)
        load.reset()
        found = await publishers(daemon, clients)

        async def each(publisher: Publisher) -> None:
            for _ in range(count // clients):
                await publisher.publish("general")
        seconds, cpu = await timed(daemon, asyncio.gather(*(each(p) for p in found)))
        total = count // clients * clients
        await wait_delivered(load, total * 10, 30)
        load.close()
        return rate_row(f"concurrent ({clients} publishers)", total, seconds, cpu,
                        complete=load.delivered == total * 10)
    finally:
        daemon.stop()


async def pipelined(count: int = 40000, clients: int = 16,
                    window: int = 16) -> dict[str, object]:
    """``clients`` keep-alive publishers, each with ``window`` requests in flight
    (HTTP pipelining: sent together, answered in order)."""
    daemon = Daemon()
    try:
        await ready(daemon)
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=10)
        await load.connect(10)
        load.reset()
        found = await publishers(daemon, clients)
        rounds = count // clients // window

        async def each(publisher: Publisher) -> None:
            for _ in range(rounds):
                for _ in range(window):
                    publisher.send("general")
                for _ in range(window):
                    await publisher.answer()
        seconds, cpu = await timed(daemon, asyncio.gather(*(each(p) for p in found)))
        total = rounds * window * clients
        await wait_delivered(load, total * 10, 30)
        load.close()
        return rate_row(f"pipelined ({clients} publishers, {window} in flight each)", total,
                        seconds, cpu, complete=load.delivered == total * 10)
    finally:
        daemon.stop()


async def per_user(users: int = 10000, events: int = 2, pattern: bool = False,
                   name: str = "per-user", server: object = None) -> dict[str, object]:
    daemon = server() if callable(server) else Daemon()
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["x"], sample_every=10 ** 9)
        load.query_for = (lambda n: f"channels=p{n}.*".encode()) if pattern else \
            (lambda n: f"channels=u{n}".encode())  # type: ignore[method-assign]
        await load.connect(users, concurrency=128)
        load.reset()
        [publisher] = await publishers(daemon, 1)
        channel = (lambda n: f"p{n}.x") if pattern else (lambda n: f"u{n}")

        async def run() -> None:
            for _ in range(events):
                for n in range(users):
                    await publisher.publish(channel(n))
        user, system = daemon.cpu_split()  # type: ignore[attr-defined]
        seconds, cpu = await timed(daemon, run())
        user_after, system_after = daemon.cpu_split()  # type: ignore[attr-defined]
        await wait_delivered(load, users * events, 30)
        load.close()
        count = users * events
        return rate_row(name, count, seconds, cpu, complete=load.delivered == count,
                        user_us_each=round(1e6 * (user_after - user) / count, 1),
                        system_us_each=round(1e6 * (system_after - system) / count, 1))
    finally:
        daemon.stop()


async def batch(count: int = 50000, size: int = 100) -> dict[str, object]:
    daemon = Daemon()
    try:
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["general"], sample_every=10)
        await load.connect(10)
        load.reset()
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)

        async def run() -> None:
            for _ in range(count // size):
                body = json.dumps([{"channel": "general", "data": f"{time.time():.6f} " +
                                    "x" * 80} for _ in range(size)]).encode()
                writer.write(b"POST /publish HTTP/1.1\r\nHost: b\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
        seconds, cpu = await timed(daemon, run())
        await wait_delivered(load, count * 10, 60)
        writer.close()
        load.close()
        return rate_row(f"batch ({size} events a request)", count, seconds, cpu,
                        unit="event", complete=load.delivered == count * 10)
    finally:
        daemon.stop()


async def connect(users: int = 10000, replay: bool = False,
                  server: object = None, name: str = "connect") -> dict[str, object]:
    daemon = server() if callable(server) else Daemon()
    try:
        query = "channels=storm"
        if replay:
            [publisher] = await publishers(daemon, 1)
            first = Publisher("127.0.0.1", daemon.port, 100)
            await first.open()
            first.send("storm")
            head = await first.reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = json.loads(await first.reader.readexactly(length))  # type: ignore[union-attr]
            last_id = answer["events"][0]["id"]
            for _ in range(2):
                await publisher.publish("storm")
            query += f"&lastEventId={last_id}"
        load = LoadClient(f"http://127.0.0.1:{daemon.port}", ["storm"], sample_every=10 ** 9)
        load.query_for = lambda _: query.encode()  # type: ignore[method-assign]
        seconds, cpu = await timed(daemon, load.connect(users, concurrency=128))
        if replay:
            await wait_delivered(load, users * 2, 30)
        held = len(load.streams) - load.lost
        load.close()
        return rate_row(f"{name}{' + replay of 2' if replay else ''} ({users:,})", users,
                        seconds, cpu, unit="connect", took_s=round(seconds, 2), held=held)
    finally:
        daemon.stop()


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {1})
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs = {
        "one": lambda: one(count=args.count),
        "concurrent": lambda: concurrent(count=4 * args.count),
        "pipelined": lambda: pipelined(count=8 * args.count),
        "per-user": lambda: per_user(),
        "patterns": lambda: _pair(),
        "redis": lambda: one(("--broker=redis", f"--redis-prefix=bench-{secrets.token_hex(3)}",
                              "--redis-raw="), args.count, "one, through Redis"),
        "amqp": lambda: one(("--broker=amqp", f"--amqp-exchange-name=bench-{secrets.token_hex(3)}"),
                            args.count, "one, through RabbitMQ"),
        "batch": lambda: batch(),
        "connect": lambda: _connects(),
        "nchan": lambda: _nchan(),
        "floor": lambda: per_user(name="floor: per-user, a bare Twisted protocol",
                                  server=floor.Floor),
    }

    async def _nchan() -> list[dict[str, object]]:
        if not nchan.available():
            print("nginx + nchan not installed (apt-get install libnginx-mod-nchan): "
                  "skipped", flush=True)
            return []
        return [await one(count=args.count, name="nchan: one", server=nchan.Nchan),
                await one(count=args.count, name="nchan: one, Redis store",
                          server=lambda: nchan.Nchan(redis=True)),
                await per_user(name="nchan: per-user", server=nchan.Nchan),
                await connect(server=nchan.Nchan, name="nchan: connect")]

    async def _pair() -> list[dict[str, object]]:
        return [await per_user(10000, 1, True, "patterns (10,000 p<i>.*)"),
                await per_user(10000, 1, False, "exact (10,000 channels)")]

    async def _connects() -> list[dict[str, object]]:
        return [await connect(), await connect(replay=True)]

    seen: dict[str, list[dict[str, object]]] = {}
    for _ in range(args.rounds):  # (each round runs every workload: noise spreads evenly)
        for name in args.workloads or list(runs):
            result = await runs[name]()
            for row in result if isinstance(result, list) else [result]:
                print(json.dumps(row), flush=True)
                seen.setdefault(str(row["workload"]), []).append(row)
    if args.rounds > 1:
        for name, rows in seen.items():
            print(json.dumps(summary(name, rows)), flush=True)


def summary(name: str, rows: list[dict[str, object]]) -> dict[str, object]:
    """A workload over several rounds: its best and median CPU per request and rate (on a
    shared machine, other tenants only ever add CPU time: the best is the cleanest)."""
    cpu = sorted(float(r["cpu_us_each"]) for r in rows)
    rate = sorted(int(r["per_s"]) for r in rows)
    return {"workload": name, "rounds": len(rows), "best_cpu_us": cpu[0],
            "median_cpu_us": cpu[len(cpu) // 2], "best_per_s": rate[-1],
            "median_per_s": rate[len(rate) // 2],
            "all_complete": all(r.get("complete", True) for r in rows)}


def cli() -> None:
    parser = argparse.ArgumentParser(description="cyclone-sse request-path benchmark")
    parser.add_argument("workloads", nargs="*", help="one concurrent pipelined per-user patterns "
                        "redis amqp batch connect nchan floor (default: all)")
    parser.add_argument("--count", type=int, default=5000, help="publishes in 'one'")
    parser.add_argument("--rounds", type=int, default=1, help="run the workloads this many "
                        "times, in turn, and end with each one's best and median")
    run_async(main, parser.parse_args())


if __name__ == "__main__":
    cli()
