"""django-eventstream behind ``--grip-proxy``, as a Pushpin user switches to it: the
real project (tests/eventstream_backend: ``GripMiddleware``, ``send_event``, with and
without ``DjangoModelStorage``) read by the SSE clients its users have — Chromium's
EventSource, npm ``eventsource``, httpx-sse, aiohttp-sse-client2, sseclient-py —
through a TCP relay that cuts their connections while events are published, behind
the daemon and behind a real Pushpin (the reference)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.daemon import DEADLINE, ROOT, Daemon
from tests.services import PrivatePushpin, TcpCut, free_port

KEY = "grip-shared-key-of-enough-length!!"
JS = ROOT / "tests" / "js"


class Site:
    """A GRIP proxy (the daemon, or the reference Pushpin) in front of the project."""

    def __init__(self, proxy: str, port: int, backend: int, relay: TcpCut,
                 storage: bool, daemon: Daemon | None) -> None:
        self.proxy, self.port, self.backend, self.relay = proxy, port, backend, relay
        self.storage, self.daemon = storage, daemon

    def cut(self) -> None:
        """Drop every client connection; they may connect again at once."""
        self.relay.cut()
        self.relay.restore()


@pytest.fixture(params=[(proxy, mode) for proxy in ("cyclone-sse", "pushpin")
                        for mode in ("storage", "nostorage")],
                ids=lambda p: "-".join(p))
def site(request, tmp_path):
    """The project (with and without its storage) behind the daemon, and behind a real
    Pushpin, the reference: every test holds both to the same answers."""
    yield from started(tmp_path, *request.param)


@pytest.fixture(params=["cyclone-sse", "pushpin"])
def stored(request, tmp_path):
    """``site`` with django-eventstream's storage."""
    yield from started(tmp_path, request.param, "storage")


def started(tmp_path, proxy, mode):
    port = free_port()
    daemon = pushpin = None
    if proxy == "pushpin":
        pushpin = PrivatePushpin(tmp_path / "pushpin", port, KEY)
        front, control = pushpin.port, pushpin.control_port
    else:
        daemon = Daemon(tmp_path, f"--grip-proxy=/events/=http://127.0.0.1:{port},"
                        f"/page/=http://127.0.0.1:{port}", f"--grip-key={KEY}")
        front = control = daemon.port
    backend = subprocess.Popen(
        [sys.executable, "-m", "tests.eventstream_backend.serve", str(port),
         f"http://127.0.0.1:{control}", KEY, str(tmp_path / "events.db"), mode],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    relay = TcpCut(("127.0.0.1", front))
    try:
        assert backend.stdout.readline().strip() == "serving"
        yield Site(proxy, front, port, relay, mode == "storage", daemon)
    finally:
        relay.cut()
        backend.kill()
        backend.wait(DEADLINE)
        backend.stdout.close()
        if pushpin is not None:
            pushpin.stop()
        if daemon is not None:
            daemon.stop()
            assert "Traceback" not in "".join(daemon.log)


def call(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body
    return body


# the clients: each puts ("open" | "message" | ..., id, data) on a queue ------------------

def npm_eventsource(url: str, seen: queue.Queue, stop: threading.Event) -> None:
    node = subprocess.Popen(["node", str(JS / "follow.mjs"), url], cwd=JS,
                            stdout=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: (stop.wait(), node.kill()), daemon=True).start()
    assert node.stdout is not None
    for line in node.stdout:
        fields = json.loads(line)
        seen.put((fields["type"], fields.get("id"), fields.get("data")))
    node.wait(DEADLINE)


def _reconnecting(read: Callable[[str | None], Iterator[tuple[str, str, str]]],
                  seen: queue.Queue, stop: threading.Event) -> None:
    """What a user of a client without reconnection writes: read until the stream
    ends, then connect again with the last id seen."""
    last: str | None = None
    while not stop.is_set():
        try:
            for kind, event_id, data in read(last):
                if event_id:
                    last = event_id
                seen.put((kind, event_id, data))
        except Exception as exc:  # (a cut connection: the library raises)
            seen.put(("error", None, type(exc).__name__))
        if not stop.is_set():
            time.sleep(0.2)  # (a client's reconnection delay)


def httpx_sse(url: str, seen: queue.Queue, stop: threading.Event) -> None:
    import httpx
    from httpx_sse import connect_sse

    def read(last: str | None) -> Iterator[tuple[str, str, str]]:
        headers = {"Last-Event-ID": last} if last else {}
        with httpx.Client(timeout=None) as client, \
                connect_sse(client, "GET", url, headers=headers) as source:
            for event in source.iter_sse():  # (raises unless text/event-stream)
                yield (event.event, event.id, event.data)

    _reconnecting(read, seen, stop)


def sseclient_py(url: str, seen: queue.Queue, stop: threading.Event) -> None:
    import sseclient

    def read(last: str | None) -> Iterator[tuple[str, str, str]]:
        host, _, rest = url.removeprefix("http://").partition("/")
        conn = http.client.HTTPConnection(host, timeout=DEADLINE)
        conn.request("GET", "/" + rest, headers={"Last-Event-ID": last} if last else {})
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "text/event-stream"
        for event in sseclient.SSEClient(iter(lambda: response.read1(4096), b"")).events():
            yield (event.event, event.id, event.data)
        conn.close()

    _reconnecting(read, seen, stop)


def aiohttp_sse(url: str, seen: queue.Queue, stop: threading.Event) -> None:
    import datetime

    from aiohttp_sse_client2 import client

    last: list[str] = []

    async def run() -> None:
        # its own reconnection (with Last-Event-ID) when a stream ends cleanly; a
        # stream cut inside a chunk raises, and is resumed below as its users do
        headers = {"Last-Event-ID": last[-1]} if last else {}
        async with client.EventSource(
                url, reconnection_time=datetime.timedelta(seconds=0.2),
                max_connect_retry=50, headers=headers,
                on_open=lambda: seen.put(("open", None, None))) as source:
            async for event in source:
                if event.last_event_id:
                    last.append(event.last_event_id)
                seen.put((event.type, event.last_event_id, event.data))
                if stop.is_set():
                    return

    while not stop.is_set():
        try:
            asyncio.run(run())
        except Exception as exc:
            seen.put(("error", None, type(exc).__name__))
            time.sleep(0.2)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, seen: queue.Queue, stop: threading.Event) -> None:
    """Chromium's own EventSource, on a page of the application's (same origin)."""
    from playwright.sync_api import sync_playwright
    if CHROMIUM is None:
        seen.put(("missing", None, "Debian's chromium is not installed"))
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking"])
        page = browser.new_page()
        page.on("console", lambda message: message.type == "log" and seen.put(
            tuple(json.loads(message.text))))  # (not the browser's own error lines)
        page.goto(url.replace("/events/", "/page/"))
        while not stop.is_set():
            page.wait_for_timeout(50)  # (the browser's console lines come in meanwhile)
        browser.close()


CLIENTS = {"chromium": chromium, "npm eventsource": npm_eventsource, "httpx-sse": httpx_sse,
           "sseclient-py": sseclient_py, "aiohttp-sse-client2": aiohttp_sse}


def following(client: Callable[[str, queue.Queue, threading.Event], None],
              port: int) -> tuple[queue.Queue, threading.Event]:
    """``client`` reading ``/events/`` on ``port`` in a thread: what it dispatches, and
    the event that stops it."""
    seen: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=client, daemon=True,
                     args=(f"http://127.0.0.1:{port}/events/", seen, stop)).start()
    return seen, stop


def next_message(seen: queue.Queue) -> tuple[str, str]:
    """(id, data) of the next ``message`` event the client dispatched."""
    end = time.monotonic() + DEADLINE
    while True:
        kind, event_id, data = seen.get(timeout=max(0.1, end - time.monotonic()))
        if kind == "message":
            return event_id, data
        if kind == "missing":
            if os.environ.get("CI") == "true":
                pytest.fail(f"{data} (CI never skips)")
            pytest.skip(data)
        assert kind in ("open", "error", "stream-open", "keep-alive"), (kind, data)


def wait_for(seen: queue.Queue, wanted: str) -> None:
    end = time.monotonic() + DEADLINE
    while (got := seen.get(timeout=max(0.1, end - time.monotonic())))[0] != wanted:
        if got[0] == "missing":
            if os.environ.get("CI") == "true":
                pytest.fail(f"{got[2]} (CI never skips)")
            pytest.skip(got[2])


@pytest.mark.parametrize("name", list(CLIENTS))
def test_each_client_gets_every_event_once_in_order_across_a_cut(site, name):
    backend, storage = site.backend, site.storage
    seen, stop = following(CLIENTS[name], site.relay.port)
    try:
        wait_for(seen, "stream-open")  # (written once the hold is subscribed)
        for n in (1, 2):
            call(backend, f"/send/?n={n}")
        got = [next_message(seen) for _ in range(2)]
        site.cut()
        for n in (3, 4):  # published while the client is away
            call(backend, f"/send/?n={n}")
        if storage:  # django-eventstream recovers them from its storage
            got += [next_message(seen) for _ in range(2)]
        else:  # nothing kept: the client starts again from what comes next
            wait_for(seen, "stream-open")
        call(backend, "/send/?n=5")
        got.append(next_message(seen))
    finally:
        stop.set()
        site.relay.cut()
    numbers = [1, 2, 3, 4, 5] if storage else [1, 2, 5]
    ids = [f"test:{n}" for n in numbers] if storage else [""] * 3
    assert [(event_id or "", json.loads(data)["n"]) for event_id, data in got] == \
        list(zip(ids, numbers, strict=True))


def test_a_gap_larger_than_a_page_is_recovered_page_by_page(stored):
    seen, stop = following(httpx_sse, stored.port)
    try:
        wait_for(seen, "stream-open")
        for n in range(1, 131):  # stored, never published: 131's prev-id shows the gap
            call(stored.backend, f"/skip/?n={n}")
        call(stored.backend, "/send/?n=131")
        got = [next_message(seen) for _ in range(131)]
        call(stored.backend, "/send/?n=132")
        got.append(next_message(seen))
    finally:
        stop.set()
    assert [(i, json.loads(d)["n"]) for i, d in got] == \
        [(f"test:{n}", n) for n in range(1, 133)]


def test_a_gap_is_recovered_from_the_backends_next_link(stored):
    backend = stored.backend
    seen, stop = following(httpx_sse, stored.port)
    try:
        wait_for(seen, "stream-open")
        call(backend, "/send/?n=1")
        call(backend, "/skip/?n=2")  # stored, never published: 3's prev-id shows the gap
        call(backend, "/send/?n=3")
        got = [next_message(seen) for _ in range(3)]
        call(backend, "/send/?n=4")  # and the stream goes on after the recovery
        got.append(next_message(seen))
    finally:
        stop.set()
    assert [(i, json.loads(d)["n"]) for i, d in got] == \
        [("test:1", 1), ("test:2", 2), ("test:3", 3), ("test:4", 4)]
    if stored.daemon is not None:
        stats = stored.daemon.request("GET", "/stats")[1]
        assert (stats["grip_recoveries"], stats["grip_held"]) == (1, 1)


def test_a_replay_larger_than_a_page_follows_the_next_links(stored):
    """django-eventstream answers 100 events at most, without Grip-Hold, with a next
    link to the rest: the proxy writes each page into the stream, then holds."""
    seen, stop = following(httpx_sse, stored.relay.port)
    try:
        wait_for(seen, "stream-open")
        call(stored.backend, "/send/?n=1")
        got = [next_message(seen)]
        stored.relay.cut()  # (and no reconnection until restored)
        for n in range(2, 152):  # stored while the client is away
            call(stored.backend, f"/skip/?n={n}")
        stored.relay.restore()
        got += [next_message(seen) for _ in range(150)]
        call(stored.backend, "/send/?n=152")  # and it is held again after the pages
        got.append(next_message(seen))
    finally:
        stop.set()
        stored.relay.cut()
    assert [(i, json.loads(d)["n"]) for i, d in got] == \
        [(f"test:{n}", n) for n in range(1, 153)]


def opened(site: Site, until: bytes) -> tuple[socket.socket, bytes]:
    """A raw ``GET /events/`` through the proxy, read until ``until`` came."""
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=DEADLINE)
    sock.sendall(b"GET /events/ HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while until not in received:
        received += sock.recv(65536)
    return sock, received


def test_a_kick_ends_the_stream_with_django_eventstreams_error(site):
    sock, received = opened(site, b"event: stream-open")
    call(site.backend, "/kick/")  # to user-anonymous, for holds on events-test only
    # the kick's second item is action: close: the response ends (Pushpin ends its
    # chunked body; the daemon, whose stream has no length, closes the connection)
    while not received.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(65536)):
        received += chunk
    sock.close()
    # (the data is what django-eventstream 5.3.4 writes: its dict's repr, as Pushpin
    # writes it too)
    error = b"event: stream-error\nid: error\ndata: {'condition': 'forbidden'"
    assert error in received and b"event: " not in received.partition(error)[2]
    daemon = site.daemon
    if daemon is not None:
        end = time.monotonic() + DEADLINE
        while daemon.request("GET", "/stats")[1]["grip_held"] and time.monotonic() < end:
            time.sleep(0.05)  # (its side of the close may come a moment after the client's)
        assert daemon.request("GET", "/stats")[1]["grip_held"] == 0


def test_the_answer_carries_the_backends_headers_once(site):
    sock, received = opened(site, b"\r\n\r\n")
    sock.close()
    lines = received.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    names = [line.partition(":")[0].lower() for line in lines]
    assert sorted(set(names)) == sorted(names)  # none twice
    headers: dict[str, Any] = {n: line.partition(":")[2].strip()
                               for n, line in zip(names, lines, strict=True)}
    assert headers["content-type"] == "text/event-stream"
    assert headers["server"].startswith("WSGIServer")  # the backend's, not the daemon's
