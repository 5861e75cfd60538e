"""Publish → delivery latency under load, with a publisher that waits for each answer.

The server is pinned to CPU 0; on CPU 1 a C client (``sse_load.c``, built here with
gcc) holds N SSE streams (or WebSocket connections) on one channel in one epoll loop,
and a publisher in this process sends events of 100 bytes at a steady rate, one request
at a time, each waiting for its answer (as an application publishing from a request
handler does).  Each event carries its send time; the C client records, per delivery,
when it read it.  It prints, per server and N: the seconds N connections took to be
ready, deliveries, p50 / p99 / max latency, the server's CPU per delivery, and its
memory per connection.  It prints numbers and asserts nothing::

    uv run python extras/bench/latency.py                        # this tree, 1k 5k 10k
    uv run python extras/bench/latency.py --servers daemon nchan --rounds 2
    uv run python extras/bench/latency.py --servers daemon-ws node-ws
    uv run python extras/bench/latency.py --tree /tmp/before     # another checkout too
    uv run python extras/bench/latency.py --tree /tmp/a --tree /tmp/b --servers tree

Servers: ``daemon`` (SSE) and ``daemon-ws`` (WebSocket, the JSON protocol) of this
tree, ``tree`` and ``tree-ws`` of each ``--tree`` (named by its folder), ``nchan``
(nginx + nchan, SSE; needs Debian's ``nginx`` and ``libnginx-mod-nchan``) and
``node-ws`` (Node with npm's ``ws``, ``node_ws.cjs``; ``npm install`` in ``tests/js``
first).  Servers and rounds are interleaved, so one noisy moment does not land on one
server only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from measured import ServerProcess  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


SSE_PATH = "/?channels=bench"
WS_SUBSCRIBE = '{"type": "subscribe", "id": 1, "channels": ["bench"]}'
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"


class TreeDaemon(ServerProcess):
    """The daemon of a checkout (this one, or ``--tree``), pinned to CPU 0."""

    def __init__(self, tree: Path, *options: str) -> None:
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", str(tree / ".venv" / "bin" / "twistd"), "-n",
             "--pidfile=", "cyclone-sse", "--port=0", "--heartbeat=0", *options],
            cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.port = 0
        for line in self.proc.stdout:
            found = re.search(rb"starting on (\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        import threading
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def publish_request(self, channel: str, data: str) -> tuple[str, str, dict[str, str]]:
        return ("/publish", f"channel={channel}&message={quote(data)}",
                {"Content-Type": "application/x-www-form-urlencoded"})


def nchan_server() -> ServerProcess:
    from nchan import Nchan
    server = Nchan()
    os.sched_setaffinity(0, {1})  # (Nchan pins this process to CPU 1 too)

    def publish_request(channel: str, data: str) -> tuple[str, str, dict[str, str]]:
        return (f"/publish?channel={channel}", data, {"Content-Type": "text/plain"})
    server.publish_request = publish_request  # type: ignore[attr-defined]
    return server


class NodeWs(ServerProcess):
    """Node with npm's ``ws`` (``node_ws.cjs``), pinned to CPU 0."""

    def __init__(self) -> None:
        if not (NODE_MODULES / "ws").is_dir():
            raise SystemExit("node-ws needs npm's ws: run 'npm install' in tests/js")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "node", str(HERE / "node_ws.cjs")],
            env={**os.environ, "WS_MODULE": str(NODE_MODULES / "ws")},
            stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])

    def publish_request(self, channel: str, data: str) -> tuple[str, str, dict[str, str]]:
        return (f"/publish?channel={channel}", data, {"Content-Type": "text/plain"})


def start(name: str, tree: Path | None, options: list[str]) -> ServerProcess:
    """The server called ``name`` on the command line, started (``tree``: the
    checkout of a ``tree`` or ``tree-ws`` server)."""
    if name == "nchan":
        return nchan_server()
    if name == "node-ws":
        return NodeWs()
    return TreeDaemon(tree or ROOT, *options)


def rss_kb(server: ServerProcess) -> int:
    return int(Path(f"/proc/{server.proc.pid}/statm").read_text().split()[1]) * PAGE_KB


def build_client() -> str:
    binary = Path(tempfile.mkdtemp(prefix="sse-load-")) / "sse_load"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "sse_load.c")], check=True)
    return str(binary)


def measure(client: str, server: ServerProcess, n: int, events: int,
            rate: float, websocket: bool = False) -> dict[str, object]:
    rss_before = rss_kb(server)
    load = subprocess.Popen(
        ["taskset", "-c", "1", client, "127.0.0.1", str(server.port),
         "/" if websocket else SSE_PATH, str(n), str(n * events), "5",
         *([WS_SUBSCRIBE] if websocket else [])], stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    assert load.stdout.readline().strip() == "ready", "the load client never got ready"
    time.sleep(1.0)
    rss_after = rss_kb(server)
    path, _, headers = server.publish_request("bench", "0")  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    for k in range(events):
        due = started + k / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        path, body, headers = server.publish_request(  # type: ignore[attr-defined]
            "bench", str(time.time_ns()) + "." + "x" * 80)
        conn.request("POST", path, body, headers)
        conn.getresponse().read()  # (the publisher waits for each answer)
    achieved = events / (time.perf_counter() - started)
    out, _ = load.communicate(timeout=120)
    cpu = server.cpu_seconds() - cpu_before
    result = json.loads(out.strip().splitlines()[-1])
    conn.close()
    return {"N": n, **result, "events_per_s": round(achieved, 1),
            "complete_pct": round(100 * result["deliveries"] / (n * events), 2),
            "cpu_us_per_delivery": round(1e6 * cpu / max(1, result["deliveries"]), 2),
            "rss_kb_per_conn": round((rss_after - rss_before) / n, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--servers", nargs="+", default=["daemon"],
                        choices=["daemon", "nchan", "tree", "daemon-ws", "tree-ws",
                                 "node-ws"])
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to measure as 'tree' (repeatable)")
    parser.add_argument("--option", action="append", default=[],
                        help="a daemon option (repeatable)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the publisher beside the load client, off the server's
    servers: list[tuple[str, str, Path | None]] = []  # (label, server, tree)
    for name in args.servers:
        if name.startswith("tree"):
            servers += [(f"{name}:{tree.name}", name, tree) for tree in args.tree]
        else:
            servers.append((name, name, None))
    if args.tree and not any(name.startswith("tree") for name in args.servers):
        servers += [(f"tree:{tree.name}", "tree", tree) for tree in args.tree]
    client = build_client()
    print("| server | N | connect s | deliveries | complete % | events/s | p50 ms | p99 ms "
          "| max ms | CPU µs/delivery | RSS KB/conn |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for _ in range(args.rounds):
        for n in args.sizes:
            for label, name, tree in servers:
                server = start(name, tree, args.option)
                try:
                    r = measure(client, server, n, args.events, args.rate,
                                websocket=name.endswith("-ws"))
                finally:
                    server.stop()
                print(f"| {label} | {n:,} | {r['connect_s']} | {r['deliveries']:,} "
                      f"| {r['complete_pct']} "
                      f"| {r['events_per_s']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                      f"| {r['max_ms']:.1f} | {r['cpu_us_per_delivery']} "
                      f"| {r['rss_kb_per_conn']} |", flush=True)


if __name__ == "__main__":
    main()
