"""What a daemon pays for publishes its clients do not want, with 1, 2 and 4 daemons on
one Redis (``--broker=redis``, default options), or on a Redis Cluster:

    uv run python extras/bench/unwanted.py                  # 1, 2, 4 daemons
    uv run python extras/bench/unwanted.py --daemons 2 --option=--redis-raw=
    uv run python extras/bench/unwanted.py --cluster        # three primaries, started here

Each daemon holds one subscriber, on a channel of its own.  Events are written straight
into the Redis history (the APPEND script ``extras/publisher.py`` runs, which stores and
announces like a daemon would), on a channel nobody subscribes to, in pipelined
batches, so no daemon handles a publish request: whatever CPU a daemon spends meanwhile
is the price of announcements it does not need.  Then publishes go, one per request,
through the daemons' own ``POST /publish`` from one waiting publisher per
daemon at once (``--requests``), for the deployment's publishes/s.  It prints numbers and asserts
nothing.  Redis must run on 127.0.0.1:6379; ``--cluster`` starts its own Cluster (three
primaries with a replica each, as ``tests/test_cluster.py`` does) and writes each
unwanted event on the primary of its shard.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "extras"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from measured import ServerProcess  # noqa: E402
from publisher import RedisPublisher  # noqa: E402

TWISTD = str(Path(sys.executable).parent / "twistd")


class ClusterWriter:
    """Writes events straight into a Cluster history's shard, on the primary that owns
    it, as the daemon's append does."""

    def __init__(self, url: str, prefix: str, channel: str) -> None:
        from cyclone_sse.history.redis_cluster import _SHAS, Shard, shard_of
        from cyclone_sse.links.redis_cluster import key_slot
        seed = url.split("//", 1)[1].split(",")[0]
        probe = RedisPublisher(port=int(seed.rsplit(":", 1)[1]))
        shard = Shard(prefix, shard_of(channel))
        slot = key_slot(shard.key)
        owner = next(e[2] for e in probe.command("CLUSTER", "SLOTS")
                     if int(e[0]) <= slot <= int(e[1]))
        probe.close()
        self.writer = RedisPublisher(port=int(owner[1]))
        from cyclone_sse.history.redis_scripts import APPEND
        self.writer.command("SCRIPT", "LOAD", APPEND)
        self.head = ("EVALSHA", _SHAS["append"], 1, shard.key, shard.prefix, channel)
        self.tail = ("", "", 1000, 3600000, 0, 0, 0, 0, "SPUBLISH", f"{prefix}:raw-stored")

    def send_many(self, events: list[tuple[str, str]]) -> None:
        replies = self.writer.pipeline([(*self.head, data, *self.tail) for _, data in events])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply

    def command(self, *args: object) -> object:
        return self.writer.command(*args)

    def close(self) -> None:
        self.writer.close()


class Daemon(ServerProcess):
    def __init__(self, prefix: str, *options: str) -> None:
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "cyclone-sse", "--port=0", "--broker=redis",
             f"--redis-prefix={prefix}", "--heartbeat=0", *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.port, up = 0, 0
        for line in self.proc.stdout:
            text = line.decode(errors="replace")
            if "starting on" in text:
                self.port = int(text.rsplit("starting on", 1)[1].split()[0])
            if " is up" in text:
                up += 1
            if self.port and up >= 2:
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()


def subscribe(port: int, channel: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/?channels={channel}", headers={"Accept": "text/event-stream"})
    return conn.getresponse()


def through_daemons(daemons: list[Daemon], events: int) -> float:
    """Publishes/s through the daemons, one waiting publisher per daemon at once."""
    each = events // len(daemons)

    def run(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"channel": "nobody", "data": "x" * 100})
        for _ in range(each):
            conn.request("POST", "/publish", body, {"Content-Type": "application/json"})
            conn.getresponse().read()

    threads = [threading.Thread(target=run, args=(d.port,)) for d in daemons]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return each * len(daemons) / (time.perf_counter() - started)


def measure(count: int, events: int, requests: int, options: list[str],
            cluster: str = "") -> dict[str, object]:
    prefix = "bench-unwanted-" + secrets.token_hex(3)
    if cluster:
        options = [*options, f"--redis-url={cluster}"]
    daemons = [Daemon(prefix, *options) for _ in range(count)]
    try:
        streams = [subscribe(d.port, f"mine{n}") for n, d in enumerate(daemons)]
        time.sleep(0.5)
        publisher: Any = ClusterWriter(cluster, prefix, "nobody") if cluster else \
            RedisPublisher(prefix=prefix)
        before = [d.cpu_seconds() for d in daemons]
        batch = 500
        for start in range(0, events, batch):
            publisher.send_many([("nobody", "x" * 100)] * min(batch, events - start))
        time.sleep(1.0)  # (what was announced last reaches the daemons)
        used = [d.cpu_seconds() - b for d, b in zip(daemons, before, strict=True)]
        rate = through_daemons(daemons, requests)
        if not cluster:
            publisher.command("EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. "
                              "':*')) do redis.call('DEL', k) end", 0, prefix)
        publisher.close()
        for stream in streams:
            stream.close()
        return {"daemons": count, "redis": "cluster" if cluster else "one",
                "us_per_unwanted_per_daemon": [round(1e6 * u / events, 2) for u in used],
                "publishes_per_s_through_daemons": int(rate)}
    finally:
        for daemon in daemons:
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--events", type=int, default=200000,
                        help="announcements nobody wants (CPU ticks are 10 ms: many)")
    parser.add_argument("--requests", type=int, default=10000,
                        help="publishes through the daemons, for publishes/s")
    parser.add_argument("--option", action="append", default=[],
                        help="a daemon option, e.g. --option=--redis-raw= (repeatable)")
    parser.add_argument("--cluster", action="store_true",
                        help="on a Redis Cluster started here (three primaries)")
    args = parser.parse_args()
    deployment = None
    if args.cluster:
        import tempfile

        from tests.services import ClusterSet
        deployment = ClusterSet(Path(tempfile.mkdtemp(prefix="bench-cluster-")))
    try:
        for count in args.daemons:
            print(measure(count, args.events, args.requests, args.option,
                          deployment.url if deployment else ""), flush=True)
    finally:
        if deployment is not None:
            deployment.close()


if __name__ == "__main__":
    main()
