"""WebSocket-over-HTTP behind ``--grip-proxy``, held to a real Pushpin: a django-grip
chat (tests/grip_backend ``/api/ws/``, written with ``request.wscontext`` as its users
write one) talked to by Python ``websockets`` and Node's ``ws``, through the daemon
and through Pushpin with an ``over_http`` route: the same welcome, echoes, meta,
subscriptions, publishes (text, binary, close), content filters, keep-alives, closes
and refusals from both."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import queue
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.daemon import DEADLINE, ROOT, Daemon
from tests.services import PrivatePushpin, free_port
from tests.test_eventstream import call

KEY = "grip-shared-key-of-enough-length!!"
JS = ROOT / "tests" / "js"


class Site:
    """The chat's backend behind a GRIP proxy (the daemon, or the reference Pushpin)."""

    def __init__(self, proxy: str, port: int, backend: int, daemon: Daemon | None) -> None:
        self.proxy, self.port, self.backend, self.daemon = proxy, port, backend, daemon

    def url(self, path: str = "/api/ws/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def publish(self, query: str) -> None:
        """A ``ws-message`` item on ``room``, published by the backend (gripcontrol)."""
        assert call(self.backend, f"/api/ws-publish/?{query}") == b"published\n"

    def seen(self, what: str) -> None:
        """Until the backend was told ``what`` of a client's end."""
        end = time.monotonic() + DEADLINE
        while what not in call(self.backend, "/api/ws-seen/").decode().splitlines():
            assert time.monotonic() < end, f"the backend never saw {what!r}"
            time.sleep(0.05)


@pytest.fixture(params=["cyclone-sse", "pushpin"])
def site(request, tmp_path):
    yield from started(tmp_path, request.param)


@pytest.fixture
def daemon_site(tmp_path):
    yield from started(tmp_path, "cyclone-sse")


def started(tmp_path, proxy, *options):
    port = free_port()
    daemon = pushpin = None
    if proxy == "pushpin":
        pushpin = PrivatePushpin(tmp_path / "pushpin", port, KEY, over_http=True)
        front, control = pushpin.port, pushpin.control_port
    else:
        daemon = Daemon(tmp_path, f"--grip-proxy=/api/=http://127.0.0.1:{port}",
                        f"--grip-key={KEY}", *options)
        front = control = daemon.port
    backend = subprocess.Popen(
        [sys.executable, "-m", "tests.grip_backend.serve", str(port),
         f"http://127.0.0.1:{control}", KEY], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert backend.stdout.readline().strip() == "serving"
        yield Site(proxy, front, port, daemon)
    finally:
        backend.kill()
        backend.wait(DEADLINE)
        backend.stdout.close()
        if pushpin is not None:
            pushpin.stop()
        if daemon is not None:
            daemon.stop()
            assert "Traceback" not in "".join(daemon.log)


# the clients: recv() gives ("text" | "binary" | "close", data or close code) -------------

class PythonClient:
    """The ``websockets`` package (its sync client)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.ws = connect(url, additional_headers=headers, open_timeout=DEADLINE,
                          legacy=True)

    def send(self, message: str | bytes) -> None:
        self.ws.send(message)

    def recv(self) -> tuple[str, Any]:
        try:
            message = self.ws.recv(timeout=DEADLINE)
        except ConnectionClosed as exc:
            return "close", exc.rcvd.code if exc.rcvd else None
        return ("binary" if isinstance(message, bytes) else "text"), message

    def close(self) -> None:
        self.ws.close()


class NodeClient:
    """Node's ``ws`` package (npm), driven through tests/js/ws-talk.mjs."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(["node", str(JS / "ws-talk.mjs"), url], cwd=JS,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.lines.get(timeout=DEADLINE) == {"type": "open"}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def send(self, message: str | bytes) -> None:
        assert isinstance(message, str) and self.proc.stdin is not None
        self.proc.stdin.write(message + "\n")
        self.proc.stdin.flush()

    def recv(self) -> tuple[str, Any]:
        fields = self.lines.get(timeout=DEADLINE)
        if fields["type"] == "close":
            return "close", fields["code"]
        assert fields["type"] == "message", fields
        if fields["binary"]:
            return "binary", base64.b64decode(fields["data"])
        return "text", fields["data"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(DEADLINE)


CLIENTS = {"websockets": PythonClient, "node-ws": NodeClient}


def opened(site: Site, client: str = "websockets", path: str = "/api/ws/") -> Any:
    """A client of the chat, past its welcome."""
    ws = CLIENTS[client](site.url(path))
    assert ws.recv() == ("text", "welcome")
    return ws


def asked(ws: Any, command: str) -> tuple[str, Any]:
    ws.send(command)
    return ws.recv()


# both proxies, both clients ------------------------------------------------------------

@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_chat_behind_either_proxy(site, client):
    """Echoes, the backend's meta kept between requests, a message to the room through
    the proxy's publish API (to the sender and to another client), a binary message, a
    message without the prefix (not the client's), then the backend's close."""
    ws, other = opened(site, client), opened(site)
    try:
        assert asked(ws, "echo hi") == ("text", "hi")
        assert asked(ws, "user alice") == ("text", "user alice")
        assert asked(ws, "whoami") == ("text", "you are alice")
        ws.send("say hello")
        assert {ws.recv(), ws.recv()} == {("text", "hello"), ("text", "said")}
        assert other.recv() == ("text", "hello")
        assert asked(ws, "binary abc") == ("binary", b"abc")
        assert asked(ws, "raw not for you") == ("text", "raw sent")
        site.publish("text=news")
        assert ws.recv() == ("text", "news")
        assert other.recv() == ("text", "news")
        assert asked(ws, "bye") == ("close", 4000)
    finally:
        ws.close()
        other.close()


def test_binary_both_ways(site):
    """A binary message reaches the backend as BINARY; a published ``content-bin``
    item is a binary message."""
    ws = opened(site)
    try:
        assert asked(ws, b"\x00\xff") == ("binary", b"got \x00\xff")
        site.publish("bin=" + base64.urlsafe_b64encode(b"\x01\x02\xfe").decode())
        assert ws.recv() == ("binary", b"\x01\x02\xfe")
    finally:
        ws.close()


def test_unsubscribe_and_a_published_close(site):
    """After the backend unsubscribes a client it gets nothing more of the room; a
    published ``action: close`` closes the others with its code."""
    left, stays = opened(site), opened(site)
    try:
        assert asked(left, "leave") == ("text", "left")
        site.publish("text=after")
        assert stays.recv() == ("text", "after")
        assert asked(left, "echo next") == ("text", "next")  # ("after" never came)
        site.publish("close=4001")
        assert stays.recv() == ("close", 4001)
        assert asked(left, "echo still") == ("text", "still")
    finally:
        left.close()
        stays.close()


def test_skip_self(site):
    """A client subscribed with the ``skip-self`` filter does not get what its own
    user (its ``user`` meta) published; others do."""
    me, other = opened(site, path="/api/ws/?skipself=1"), opened(site)
    try:
        assert asked(me, "user alice") == ("text", "user alice")
        assert asked(me, "say hi all") == ("text", "said")
        assert other.recv() == ("text", "hi all")
        site.publish("text=from-bob&sender=bob")
        assert me.recv() == ("text", "from-bob")
    finally:
        me.close()
        other.close()


def test_keep_alive_message(site):
    """A ``keep-alive`` control message: its content is sent after a second without
    anything written."""
    ws = opened(site)
    try:
        assert asked(ws, "ka") == ("text", "ka set")
        assert ws.recv() == ("text", "still here")
    finally:
        ws.close()


def test_the_backend_hears_of_each_end(site):
    """A client's close reaches the backend as CLOSE with its code; a client that
    vanishes, as DISCONNECT."""
    ws = opened(site)
    ws.ws.close(code=1000)
    site.seen("close 1000")
    gone = opened(site)
    gone.ws.socket.close()  # (no close frame)
    site.seen("disconnect")


def test_a_refusal_is_passed_on(site):
    """A backend that refuses the WebSocket (a plain 403): the client gets the 403."""
    with pytest.raises(InvalidStatus) as refused:
        connect(site.url("/api/ws-refused/"), open_timeout=DEADLINE)
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"no WebSockets for you\n"


def test_a_client_cannot_forge_meta(site):
    """``Meta-*`` headers the client sends never reach the backend as its meta."""
    ws = PythonClient(site.url(), {"Meta-User": "mallory"})
    try:
        assert ws.recv() == ("text", "welcome")
        assert asked(ws, "whoami") == ("text", "you are nobody")
    finally:
        ws.close()


# the daemon's own limits -----------------------------------------------------------------

def test_limits_and_counts(daemon_site):
    """A message over ``--ws-max-message`` is closed with 1009 before the backend sees
    it; a held WebSocket is counted in /stats (``grip_held``)."""
    ws = opened(daemon_site)
    try:
        stats = json.loads(call(daemon_site.port, "/stats"))
        assert stats["grip_held"] == 1
        assert asked(ws, "x" * 70_000) == ("close", 1009)
    finally:
        ws.close()
    end = time.monotonic() + DEADLINE
    while json.loads(call(daemon_site.port, "/stats"))["grip_held"]:
        assert time.monotonic() < end
        time.sleep(0.05)


def test_a_backend_that_is_down(tmp_path):
    """No backend: the handshake is answered 502, with the reason."""
    port = free_port()
    daemon = Daemon(tmp_path, f"--grip-proxy=/api/=http://127.0.0.1:{port}")
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{daemon.port}/api/ws/", open_timeout=DEADLINE)
        assert refused.value.response.status_code == 502
        assert b"did not answer" in refused.value.response.body
    finally:
        daemon.stop()


# what the daemon makes of a backend that does not keep to the protocol -------------------

class Scripted(http.server.BaseHTTPRequestHandler):
    """A backend answering each WebSocket-over-HTTP request by its path: ``/no-open/``
    accepts nothing, ``/cut/`` sends a cut-short event, ``/turns-plain/`` accepts, then
    answers in text/plain."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        answer, kind = {
            "/api/no-open/": (b"TEXT 2\r\nhi\r\n", "application/websocket-events"),
            "/api/cut/": (b"OPEN\r\nTEXT 99\r\nab\r\n", "application/websocket-events"),
        }.get(self.path, (b"OPEN\r\n", "application/websocket-events"))
        if self.path == "/api/turns-plain/" and body != b"OPEN\r\n":
            answer, kind = b"hello\n", "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_backend_off_the_protocol(tmp_path):
    """An answer to OPEN without OPEN, or cut short: 502 naming it; an answer that is
    not ``application/websocket-events`` later on: the client is closed with 1011."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    daemon = Daemon(tmp_path, f"--grip-proxy=/api/=http://127.0.0.1:{backend.server_port}")
    try:
        for path, reason in (("no-open", b"no OPEN"), ("cut", b"cut short")):
            with pytest.raises(InvalidStatus) as refused:
                connect(f"ws://127.0.0.1:{daemon.port}/api/{path}/", open_timeout=DEADLINE)
            assert refused.value.response.status_code == 502
            assert reason in refused.value.response.body
        ws = PythonClient(f"ws://127.0.0.1:{daemon.port}/api/turns-plain/")
        ws.send("anything")
        assert ws.recv() == ("close", 1011)
        assert "Traceback" not in "".join(daemon.log)
    finally:
        daemon.stop()
        backend.shutdown()
