"""What a daemon pays for publishes its clients do not want, with 1, 2 and 4 daemons on
one Redis (``--broker=redis``, default options):

    uv run python extras/bench/unwanted.py                  # 1, 2, 4 daemons
    uv run python extras/bench/unwanted.py --daemons 2 --option=--redis-raw=

Each daemon holds one subscriber, on a channel of its own.  Events are written straight
into the Redis history (the APPEND script ``extras/publisher.py`` runs, which stores and
announces like a daemon would), on a channel nobody subscribes to, in pipelined
batches, so no daemon handles a publish request: whatever CPU a daemon spends meanwhile
is the price of announcements it does not need.  Then publishes go, one per request,
through the daemons' own ``POST /publish`` from one waiting publisher per
daemon at once (``--requests``), for the deployment's publishes/s.  It prints numbers and asserts
nothing.  Redis must run on 127.0.0.1:6379.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "extras"))
sys.path.insert(0, str(HERE))

from measured import ServerProcess  # noqa: E402
from publisher import RedisPublisher  # noqa: E402

TWISTD = str(Path(sys.executable).parent / "twistd")


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


def measure(count: int, events: int, requests: int,
            options: list[str]) -> dict[str, object]:
    prefix = "bench-unwanted-" + secrets.token_hex(3)
    daemons = [Daemon(prefix, *options) for _ in range(count)]
    try:
        streams = [subscribe(d.port, f"mine{n}") for n, d in enumerate(daemons)]
        time.sleep(0.5)
        publisher = RedisPublisher(prefix=prefix)
        before = [d.cpu_seconds() for d in daemons]
        batch = 500
        for start in range(0, events, batch):
            publisher.send_many([("nobody", "x" * 100)] * min(batch, events - start))
        time.sleep(1.0)  # (what was announced last reaches the daemons)
        used = [d.cpu_seconds() - b for d, b in zip(daemons, before, strict=True)]
        rate = through_daemons(daemons, requests)
        publisher.command("EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. ':*')) "
                          "do redis.call('DEL', k) end", 0, prefix)
        publisher.close()
        for stream in streams:
            stream.close()
        return {"daemons": count,
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
    args = parser.parse_args()
    for count in args.daemons:
        print(measure(count, args.events, args.requests, args.option), flush=True)


if __name__ == "__main__":
    main()
