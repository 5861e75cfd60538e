"""The Python cost of one per-user publish, in process: no sockets, no other process.

The application runs on Twisted's reactor (not started: each publish's reactor turn is
one ``runUntilCurrent``), with ``--subscribers`` streams each on its own channel and one
kept-alive publisher connection, all on in-memory transports.  Each publish is the form
request ``requests.py`` sends, to the next subscriber's channel; the answer and the
delivery are written to the transports.  What is left out is exactly what the kernel
and the reactor's ``epoll`` loop cost (``requests.py per-user`` measures those too)::

    uv run python extras/bench/inprocess.py                # µs per publish (noisy)
    uv run python extras/bench/inprocess.py --callgrind    # instructions per publish

``--callgrind`` runs the same loop twice under valgrind's callgrind (0 and ``--rounds``
rounds after the same warm-up) and prints the difference per publish: a count of
instructions that repeats to the instruction, whatever else the machine is doing, so
two versions of the request path can be compared on a noisy machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def publish_request(channel: str) -> bytes:
    """What ``extras/client.py``'s ``Publisher`` sends for one publish (100 bytes)."""
    stamp = f"{time.time():.6f} "
    body = f"channel={channel}&message={stamp}{'x' * (100 - len(stamp))}".encode()
    return (b"POST /publish HTTP/1.1\r\nHost: load\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body))


def run(subscribers: int, rounds: int) -> float:
    """Seconds per publish over ``rounds`` rounds, one publish to each subscriber."""
    from twisted.internet import reactor

    from cyclone_sse.app import App
    from tests.memory import Connection, subscribe

    app = App({}, reactor=reactor)
    app.start()
    streams = [subscribe(app, f"channels=u{n}") for n in range(subscribers)]
    publisher = Connection(app)
    requests = [publish_request(f"u{n}") for n in range(subscribers)]
    received = publisher.protocol.dataReceived
    turn = reactor.runUntilCurrent  # type: ignore[attr-defined]

    def publish_all(times: int) -> int:
        """Publish; how many were answered 200 and delivered."""
        done = 0
        for _ in range(times):
            for request in requests:
                received(request)
                turn()  # the end of the reactor turn: the fan-out
            answered = publisher.transport.value().count(b"HTTP/1.1 200 OK\r\n")
            delivered = sum(b"\ndata: " in stream.transport.value() for stream in streams)
            done += min(answered, delivered)
            publisher.transport.clear()
            for stream in streams:
                stream.transport.clear()
        return done

    # warm-up: every channel has a history, every cache is filled
    assert publish_all(2) == 2 * subscribers, "every publish answered and delivered"
    started = time.perf_counter()
    done = publish_all(rounds)
    seconds = time.perf_counter() - started
    assert done == rounds * subscribers, "every publish answered and delivered"
    return seconds / max(1, rounds * subscribers)


def instructions(subscribers: int, rounds: int) -> int:
    """Instructions per publish, from two callgrind runs."""
    def total(times: int) -> int:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--subscribers", str(subscribers),
             "--rounds", str(times), "--quiet"],
            capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        assert found, done.stderr[-2000:]
        return int(found.group(1))
    return (total(rounds) - total(0)) // (rounds * subscribers)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int,
                        help="10,000 (2,000 with --callgrind)")
    parser.add_argument("--rounds", type=int, help="10 (3 with --callgrind)")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per publish (about 90 s)")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    subscribers = args.subscribers or (2000 if args.callgrind else 10000)
    rounds = args.rounds if args.rounds is not None else (3 if args.callgrind else 10)
    if args.callgrind:
        print(f"instructions per publish: {instructions(subscribers, rounds):,} "
              f"({subscribers:,} subscribers, {rounds} rounds)")
        return
    seconds = run(subscribers, rounds)
    if not args.quiet:
        print(f"{1e6 * seconds:.1f} µs per publish in process ({subscribers:,} "
              f"subscribers on their own channels, {rounds} rounds)")


if __name__ == "__main__":
    cli()
