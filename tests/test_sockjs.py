"""SockJS (``--sockjs-prefix``) with sockjs-client 1.6.1 from npm in a real Chromium,
over its WebSocket transport: the article's page (``new SockJS(".../echo")``, listening
only) gets what is published to the ``--sockjs-channels``; a session that speaks uses
the daemon's WebSocket protocol inside SockJS frames, with ``lastEventId`` resume."""

from __future__ import annotations

import http.server
import json
import queue
import socket
import threading
import time

import pytest

from tests.daemon import DEADLINE, Daemon
from tests.test_browser import QuietPages, browser, pytestmark  # noqa: F401
from tests.test_jquery import node_modules  # noqa: F401

PAGE = """<!doctype html><title>sockjs</title><script src="/sockjs.min.js"></script>
<script>
const out = (...fields) => console.log(JSON.stringify(fields));
window.SyncServer = new SockJS("%(url)s", null, {transports: %(transports)s});
SyncServer.onopen = () => out("open", SyncServer.transport);
SyncServer.onmessage = (e) => out("message", e.data);
SyncServer.onclose = (e) => out("close", e.code);
</script>"""


class Pages(QuietPages):
    """The web application's origin (another port than the daemon's, as the articles'
    Django site): the page, and sockjs-client from npm."""

    page = ""
    script = b""

    def do_GET(self):
        if self.path.startswith("/sockjs.min.js"):
            self.answer(self.script, "application/javascript")
        else:
            self.answer(self.page.encode(), "text/html; charset=utf-8")


@pytest.fixture
def site(node_modules):  # noqa: F811
    Pages.script = (node_modules / "sockjs-client" / "dist" / "sockjs.min.js").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def opened_page(browser, site, port, transports='["websocket"]',  # noqa: F811
                opens: bool = True):
    """The site's page opening a SockJS session on the daemon's /echo; what it logs
    comes on the queue."""
    Pages.page = PAGE % {"url": f"http://127.0.0.1:{port}/echo", "transports": transports}
    page = browser.new_page()
    seen: queue.Queue = queue.Queue()
    page.on("console", lambda message: seen.put(
        json.loads(message.text) if message.text.startswith("[") else ["log", message.text]))
    page.goto(f"{site}/page")
    if opens:
        assert logged(page, seen) == ["open", "websocket"]
    return page, seen


def logged(page, seen: queue.Queue, timeout: float = DEADLINE) -> list:
    """The page's next console line (JSON), skipping the browser's own."""
    end = time.monotonic() + timeout
    while True:
        try:
            line = seen.get_nowait()
        except queue.Empty:
            assert time.monotonic() < end, "the page logged nothing more"
            page.wait_for_timeout(20)  # (the browser's console lines come in meanwhile)
            continue
        if line[0] != "log":
            return line


def next_data(page, seen: queue.Queue) -> str:
    kind, data = logged(page, seen)
    assert kind == "message", (kind, data)
    return data


def test_the_articles_page_receives_what_is_published(tmp_path, browser, site):  # noqa: F811
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo", "--sockjs-channels=contacts")
    try:
        page, seen = opened_page(browser, site, daemon.port)
        end = time.monotonic() + DEADLINE
        while daemon.request("GET", "/stats")[1]["channels"] < 1:
            assert time.monotonic() < end
            time.sleep(0.05)
        for data in ('{"name": "Ann"}', "line one\nline two"):
            daemon.publish_form("channel=contacts&" + __import__("urllib.parse").parse
                                .urlencode({"message": data}))
            assert next_data(page, seen) == data
        page.close()
    finally:
        daemon.stop()


def test_a_session_speaks_the_websocket_protocol_and_resumes(tmp_path, browser,  # noqa: F811
                                                             site):
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo")
    try:
        page, seen = opened_page(browser, site, daemon.port)
        page.evaluate('SyncServer.send(JSON.stringify({type: "subscribe", id: 1, '
                      'channels: ["room"]}))')
        subscribed = json.loads(next_data(page, seen))
        assert subscribed["type"] == "subscribed" and subscribed["channels"] == ["room"]
        first = daemon.publish_form("channel=room&message=one")[1]["events"][0]["id"]
        event = json.loads(next_data(page, seen))
        assert (event["type"], event["id"], event["data"]) == ("event", first, "one")
        page.close()
        daemon.publish_form("channel=room&message=two")  # (while nobody listens)
        page, seen = opened_page(browser, site, daemon.port)
        page.evaluate('SyncServer.send(JSON.stringify({type: "subscribe", id: 2, '
                      f'channels: ["room"], lastEventId: "{first}"}}))')
        assert json.loads(next_data(page, seen))["type"] == "subscribed"
        assert json.loads(next_data(page, seen))["data"] == "two"
        page.close()
    finally:
        daemon.stop()


def test_info_and_what_is_refused(tmp_path):
    """``/echo/info`` as sockjs-client reads it; a session path with a dot, or a GET
    that does not upgrade, is refused."""
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo")
    try:
        status, info = daemon.request("GET", "/echo/info")
        assert status == 200 and info["websocket"] is True and info["origins"] == ["*:*"]
        assert isinstance(info["entropy"], int) and info["cookie_needed"] is False
        assert daemon.request("GET", "/echo/000/abc/websocket")[0] == 400
        assert daemon.request("GET", "/echo/000/a.b/websocket")[0] == 404
        sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
        sock.sendall(b"GET /echo/000/abc/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket"
                     b"\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        data = b""
        while b"\x81\x01o" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 101")
        sock.sendall(bytes([0x81, 0x80 | 3, 0, 0, 0, 0]) + b"{[}")  # (masked: not JSON)
        while b"c[1008" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        sock.close()
    finally:
        daemon.stop()


@pytest.mark.parametrize("transports", ['["xhr-streaming"]', '["xhr-polling"]'])
def test_the_http_transports_are_not_offered_yet(tmp_path, browser, site,  # noqa: F811
                                                 transports):
    """Only SockJS's WebSocket transport is served: a client forced to another one is
    refused (its requests are 404) and closes."""
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo")
    try:
        page, seen = opened_page(browser, site, daemon.port, transports, opens=False)
        assert logged(page, seen, 30)[0] == "close"
        page.close()
    finally:
        daemon.stop()
