"""django-eventstream behind ``--grip-proxy``, as a Pushpin user switches to it: the
real project (tests/eventstream_backend: ``GripMiddleware``, ``send_event``, with and
without ``DjangoModelStorage``) read by the SSE clients its users have — npm
``eventsource``, httpx-sse, aiohttp-sse-client2, sseclient-py — through a TCP relay
that cuts their connections while events are published."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.daemon import DEADLINE, ROOT, Daemon
from tests.services import free_port

KEY = "grip-shared-key-of-enough-length!!"
JS = ROOT / "tests" / "js"


class Relay:
    """A TCP relay to the daemon whose connections ``cut()`` closes, as a network that
    drops them would (the clients reconnect through it)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # (the daemon is gone: the client sees its connection end)
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            cut, self.sockets = self.sockets, []
        for sock in cut:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture(params=["storage", "nostorage"])
def site(request, tmp_path):
    """The daemon proxying /events/ to the django-eventstream project (with and
    without its storage), and a relay."""
    yield from started(tmp_path, request.param)


@pytest.fixture
def stored(tmp_path):
    """``site`` with django-eventstream's storage."""
    yield from started(tmp_path, "storage")


def started(tmp_path, mode):
    port = free_port()
    daemon = Daemon(tmp_path, f"--grip-proxy=/events/=http://127.0.0.1:{port}",
                    f"--grip-key={KEY}")
    backend = subprocess.Popen(
        [sys.executable, "-m", "tests.eventstream_backend.serve", str(port),
         f"http://127.0.0.1:{daemon.port}", KEY, str(tmp_path / "events.db"),
         mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    relay = Relay(daemon.port)
    try:
        assert backend.stdout.readline().strip() == "serving"
        yield daemon, port, relay, mode == "storage"
    finally:
        relay.close()
        backend.kill()
        backend.wait(DEADLINE)
        backend.stdout.close()
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

    async def run() -> None:
        # its own reconnection (with Last-Event-ID) after a cut
        async with client.EventSource(
                url, reconnection_time=datetime.timedelta(seconds=0.2),
                max_connect_retry=50,
                on_open=lambda: seen.put(("open", None, None))) as source:
            async for event in source:
                seen.put((event.type, event.last_event_id, event.data))
                if stop.is_set():
                    return

    try:
        asyncio.run(run())
    except Exception as exc:
        seen.put(("error", None, type(exc).__name__))


CLIENTS = {"npm eventsource": npm_eventsource, "httpx-sse": httpx_sse,
           "sseclient-py": sseclient_py, "aiohttp-sse-client2": aiohttp_sse}


def next_message(seen: queue.Queue) -> tuple[str, str]:
    """(id, data) of the next ``message`` event the client dispatched."""
    end = time.monotonic() + DEADLINE
    while True:
        kind, event_id, data = seen.get(timeout=max(0.1, end - time.monotonic()))
        if kind == "message":
            return event_id, data
        assert kind in ("open", "error", "stream-open", "keep-alive"), (kind, data)


def wait_for(seen: queue.Queue, wanted: str) -> None:
    end = time.monotonic() + DEADLINE
    while seen.get(timeout=max(0.1, end - time.monotonic()))[0] != wanted:
        pass


@pytest.mark.parametrize("name", list(CLIENTS))
def test_each_client_gets_every_event_once_in_order_across_a_cut(site, name):
    _daemon, backend, relay, storage = site
    seen: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=CLIENTS[name], daemon=True,
                              args=(f"http://127.0.0.1:{relay.port}/events/", seen, stop))
    reader.start()
    try:
        wait_for(seen, "stream-open")  # (written once the hold is subscribed)
        for n in (1, 2):
            call(backend, f"/send/?n={n}")
        got = [next_message(seen) for _ in range(2)]
        relay.cut()
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
        relay.cut()
    numbers = [1, 2, 3, 4, 5] if storage else [1, 2, 5]
    ids = [f"test:{n}" for n in numbers] if storage else [""] * 3
    assert [(event_id or "", json.loads(data)["n"]) for event_id, data in got] == \
        list(zip(ids, numbers, strict=True))


def test_a_gap_is_recovered_from_the_backends_next_link(stored):
    daemon, backend, _relay, _ = stored
    seen: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=httpx_sse, daemon=True,
                     args=(f"http://127.0.0.1:{daemon.port}/events/", seen, stop)).start()
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
    stats = daemon.request("GET", "/stats")[1]
    assert (stats["grip_recoveries"], stats["grip_held"]) == (1, 1)


def test_a_kick_ends_the_stream_with_django_eventstreams_error(site):
    daemon, backend, _relay, _ = site
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
    sock.sendall(b"GET /events/ HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while b"event: stream-open" not in received:
        received += sock.recv(65536)
    call(backend, "/kick/")  # to user-anonymous, for holds on events-test only
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()  # (the daemon closed it: the kick's second item is action: close)
    end = time.monotonic() + DEADLINE
    while daemon.request("GET", "/stats")[1]["grip_held"] and time.monotonic() < end:
        time.sleep(0.05)  # (its side of the close may come a moment after the client's)
    assert daemon.request("GET", "/stats")[1]["grip_held"] == 0
    # (the data is what django-eventstream 5.3.4 writes: its dict's repr, as Pushpin
    # writes it too)
    last = received.rpartition(b"\n\nevent: ")[2]
    assert last.startswith(b"stream-error\nid: error\ndata: {'condition': 'forbidden'")


def test_the_answer_carries_the_backends_headers_once(site):
    daemon, *_ = site
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
    sock.sendall(b"GET /events/ HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    sock.close()
    lines = received.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    names = [line.partition(":")[0].lower() for line in lines]
    assert sorted(set(names)) == sorted(names)  # none twice
    headers: dict[str, Any] = {n: line.partition(":")[2].strip()
                               for n, line in zip(names, lines, strict=True)}
    assert headers["content-type"] == "text/event-stream"
    assert headers["server"].startswith("WSGIServer")  # the backend's, not the daemon's
