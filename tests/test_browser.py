"""A real headless Chromium's EventSource against the real daemon."""

import http.server
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from tests.daemon import Daemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


MEDIA = Path(__file__).resolve().parent.parent / "media"


class QuietPages(http.server.BaseHTTPRequestHandler):
    """A web application's origin for the browser tests: ``answer`` sends a body."""

    def answer(self, body, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Page(QuietPages):
    def do_GET(self):
        if self.path == "/cyclone-sse.js":
            self.answer((MEDIA / "cyclone-sse.js").read_bytes(), "text/javascript")
        else:
            self.answer(b"<!doctype html><meta charset=utf-8><title>app</title>"
                        b"<script src=/cyclone-sse.js></script>", "text/html")


@pytest.fixture(scope="module")
def page_url():
    """The web application's page: another origin than the daemon's, so the browser
    applies CORS to the EventSource exactly as in production."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def page(browser, page_url):
    context = browser.new_context()
    page = context.new_page()
    page.goto(page_url)
    yield page
    context.close()


OPEN_STREAM = """(url) => {
    window.got = [];
    window.opened = 0;
    const es = new EventSource(url);
    window.es = es;
    es.onopen = () => { window.opened += 1; };
    es.onmessage = (e) => window.got.push(["message", e.data, e.lastEventId]);
    for (const name of ["note", "history-gap"]) {
        es.addEventListener(name, (e) => window.got.push([name, e.data, e.lastEventId]));
    }
}"""


def received(page, count):
    page.wait_for_function(f"window.got.length >= {count}", timeout=20000)
    return page.evaluate("window.got")


def test_eventsource_receives_messages_named_events_and_ids(tmp_path, page):
    daemon = Daemon(tmp_path)
    try:
        page.evaluate(OPEN_STREAM, f"http://127.0.0.1:{daemon.port}/?channels=base&channels=x")
        page.wait_for_function("window.opened === 1", timeout=20000)
        daemon.publish_form("message=%5B1%2C+2%2C+3%5D&channel=base")
        daemon.request("POST", "/publish", json.dumps({
            "channel": "x", "event": "note", "data": "ligne 1\r\nlïgne 2 ✓"}),
            {"Content-Type": "application/json"})
        got = received(page, 2)
        assert [(name, data) for name, data, _ in got] == [
            ("message", "[1, 2, 3]"), ("note", "ligne 1\nlïgne 2 ✓")]
        assert got[0][2] and got[1][2] and got[0][2] != got[1][2]
    finally:
        daemon.stop()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_after_a_restart_the_browser_reconnects_with_its_last_id_and_is_told_of_the_gap(
        tmp_path, page):
    port = free_port()
    first = Daemon(tmp_path, f"--port={port}", "--retry=200")
    try:
        page.evaluate(OPEN_STREAM, f"http://127.0.0.1:{port}/?channels=a")
        page.wait_for_function("window.opened === 1", timeout=20000)
        first.publish_form("message=before&channel=a")
        last_id = received(page, 1)[0][2]
    finally:
        first.stop()
    second = Daemon(tmp_path, f"--port={port}", "--retry=200")
    try:
        page.wait_for_function("window.opened === 2", timeout=20000)
        second.publish_form("message=after&channel=a")
        got = received(page, 3)
        gap = got[1]
        assert gap[0] == "history-gap"
        # the browser sent Last-Event-ID on its own; the new daemon did not know it
        assert json.loads(gap[1]) == {"reason": "unknown", "lastEventId": last_id}
        assert got[2][:2] == ["message", "after"]
    finally:
        second.stop()


CLIENT = """([url, transport, lastEventId]) => {
    window.got = [];
    window.stream = CycloneSSE.connect(url, {
        channels: ["a", "b"], transport: transport, lastEventId: lastEventId,
        onmessage: (e) => window.got.push(["message", e.data])});
    window.stream.on("note", (e) => window.got.push(["note", e.data]));
    window.stream.on("history-gap", (e) => window.got.push(["gap", JSON.parse(e.data).reason]));
    return window.stream.transport;
}"""


@pytest.mark.parametrize("transport,expected", [("auto", "eventsource"), ("poll", "poll"),
                                                ("websocket", "websocket")])
def test_media_client_receives_everything_over_every_transport(tmp_path, page, transport,
                                                               expected):
    daemon = Daemon(tmp_path, "--poll-timeout=1")
    try:
        daemon.publish_form("message=before&channel=a")
        used = page.evaluate(CLIENT, [f"http://127.0.0.1:{daemon.port}/", transport,
                                      "not-an-id"])
        assert used == expected
        # the unknown id is answered with a gap, then the retained event
        assert received(page, 2) == [["gap", "unknown"], ["message", "before"]]
        for n, channel in enumerate("abab"):
            daemon.publish_form(f"message=m{n}&channel={channel}")
        daemon.request("POST", "/publish", json.dumps(
            {"channel": "b", "event": "note", "data": "named ✓"}),
            {"Content-Type": "application/json"})
        got = received(page, 7)
        assert got[2:] == [["message", "m0"], ["message", "m1"], ["message", "m2"],
                           ["message", "m3"], ["note", "named ✓"]]
        page.evaluate("window.stream.close()")
    finally:
        daemon.stop()


def test_the_page_loads_the_client_from_the_daemon_as_the_readme_shows(tmp_path, browser):
    daemon = Daemon(tmp_path)
    context = browser.new_context()
    try:
        page = context.new_page()
        base = f"http://127.0.0.1:{daemon.port}"
        answer = page.goto(f"{base}/static/cyclone-sse.js")
        assert answer.status == 200
        assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
        page.set_content(f'<script src="{base}/static/cyclone-sse.js"></script>')
        page.evaluate("""(url) => {
            window.got = [];
            window.opened = false;
            window.stream = CycloneSSE.connect(url, {channels: ["base"],
                onopen: () => { window.opened = true; },
                onmessage: (e) => window.got.push(["message", e.data])});
        }""", f"{base}/")
        page.wait_for_function("window.opened", timeout=20000)
        daemon.publish_form("message=%5B123%2C+124%5D&channel=base")
        assert received(page, 1) == [["message", "[123, 124]"]]
    finally:
        context.close()
        daemon.stop()


# private channels ------------------------------------------------------------------

JWT_SECRET = "browser-test-secret-at-least-32-bytes"


def _token(channels, ttl):
    import time

    import jwt
    return jwt.encode({"sub": "alice", "channels": channels,
                       "exp": int(time.time()) + ttl}, JWT_SECRET, algorithm="HS256")


def _private_daemon(tmp_path, page_url):
    origin = page_url.rstrip("/")
    return Daemon(tmp_path, f"--jwt-secret={JWT_SECRET}", "--policies=user.*=token",
                  f"--cors-origin={origin}", "--http-secret=browser-publish-key")


def _publish(daemon, channel, data):
    status, body = daemon.request("POST", "/publish", f"channel={channel}&message={data}",
                                  {"Content-Type": "application/x-www-form-urlencoded",
                                   "Authorization": "Bearer browser-publish-key"})
    assert status == 200, body


def test_a_page_on_another_origin_reads_a_private_channel_with_a_cookie_token(
        tmp_path, browser, page_url):
    daemon = _private_daemon(tmp_path, page_url)
    context = browser.new_context()
    try:
        context.add_cookies([{"name": "cyclone_sse_token", "value": _token(["user.feed"], 300),
                              "domain": "127.0.0.1", "path": "/"}])
        page = context.new_page()
        page.goto(page_url)
        url = f"http://127.0.0.1:{daemon.port}/?channels=user.feed"
        page.evaluate("""(url) => {
            window.got = [];
            window.refused = 0;
            // without credentials no cookie goes: refused (401), and EventSource gives up
            const bare = new EventSource(url);
            bare.onerror = () => { if (bare.readyState === 2) window.refused += 1; };
            const es = new EventSource(url, {withCredentials: true});
            es.onopen = () => { window.opened = true; };
            es.onmessage = (e) => window.got.push(["message", e.data]);
        }""", url)
        page.wait_for_function("window.opened && window.refused === 1", timeout=20000)
        _publish(daemon, "user.feed", "for alice only")
        assert received(page, 1) == [["message", "for alice only"]]
    finally:
        context.close()
        daemon.stop()


def test_the_client_refreshes_an_expiring_token_and_loses_nothing(tmp_path, page,
                                                                   page_url):
    daemon = _private_daemon(tmp_path, page_url)
    try:
        page.evaluate("""([url, first]) => {
            window.got = [];
            window.opened = 0;
            window.expired = 0;
            window.tokens = [first];
            window.waiting = [];
            window.stream = CycloneSSE.connect(url, {
                channels: ["user.feed"],
                // a page asks its server for a fresh token; here the test hands it over
                token: () => window.tokens.length ? window.tokens.shift()
                    : new Promise((resolve) => window.waiting.push(resolve)),
                onopen: () => { window.opened += 1; },
                onmessage: (e) => window.got.push(["message", e.data, e.lastEventId])});
            window.stream.on("token-expired", () => { window.expired += 1; });
        }""", [f"http://127.0.0.1:{daemon.port}/", _token(["user.feed"], 3)])
        page.wait_for_function("window.opened === 1", timeout=20000)
        _publish(daemon, "user.feed", "m1")
        _publish(daemon, "user.feed", "m2")
        received(page, 2)
        page.wait_for_function("window.expired === 1 && window.waiting.length === 1",
                               timeout=20000)
        _publish(daemon, "user.feed", "m3")  # while the page has no connection at all
        _publish(daemon, "user.feed", "m4")
        page.evaluate("(token) => window.waiting.shift()(token)", _token(["user.feed"], 300))
        page.wait_for_function("window.opened === 2", timeout=20000)
        _publish(daemon, "user.feed", "m5")
        _publish(daemon, "user.feed", "last")  # anything repeated would come before it
        got = received(page, 6)
        assert [g[1] for g in got] == ["m1", "m2", "m3", "m4", "m5", "last"]
        assert len({g[2] for g in got}) == 6
        page.evaluate("window.stream.close()")
    finally:
        daemon.stop()
