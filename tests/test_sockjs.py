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
from tests.test_sockjs_protocol import ask, held_poll, receivers

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


def opened_page(browser, site, port, transport="websocket",  # noqa: F811
                same_origin=False):
    """The site's page opening a SockJS session on the daemon's /echo with sockjs-client
    forced to ``transport``; what it logs comes on the queue.  ``same_origin``: the page
    (and sockjs-client) as if served by the daemon's origin (Playwright answers those two
    URLs; Chromium opens no WebSocket from such a page, the HTTP transports work)."""
    Pages.page = PAGE % {"url": f"http://127.0.0.1:{port}/echo",
                         "transports": json.dumps([transport])}
    page = browser.new_page()
    if same_origin:
        site = f"http://127.0.0.1:{port}"
        page.route(f"{site}/page", lambda route: route.fulfill(
            body=Pages.page, content_type="text/html; charset=utf-8"))
        page.route(f"{site}/sockjs.min.js", lambda route: route.fulfill(
            body=Pages.script, content_type="application/javascript"))
    seen: queue.Queue = queue.Queue()
    page.on("console", lambda message: seen.put(
        json.loads(message.text) if message.text.startswith("[") else ["log", message.text]))
    # (the iframe transports' page on the daemon loads sockjs-client from --sockjs-url)
    page.route("https://cdn.jsdelivr.net/**", lambda route: route.fulfill(
        body=Pages.script, content_type="application/javascript"))
    page.goto(f"{site}/page")
    assert logged(page, seen) == ["open", transport]
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


TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling", "eventsource", "jsonp-polling",
              "iframe-eventsource", "iframe-xhr-polling", "iframe-htmlfile"]


@pytest.mark.parametrize("transport,same_origin", [
    *((transport, False) for transport in TRANSPORTS),
    # htmlfile is same-origin only; the others from a page on the daemon's origin too
    ("htmlfile", True), ("xhr-streaming", True), ("eventsource", True)])
def test_the_articles_page_receives_what_is_published(tmp_path, browser, site,  # noqa: F811
                                                       transport, same_origin):
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo", "--sockjs-channels=contacts")
    try:
        page, seen = opened_page(browser, site, daemon.port, transport, same_origin)
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


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_session_speaks_the_websocket_protocol_and_resumes(tmp_path, browser,  # noqa: F811
                                                             site, transport):
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo")
    try:
        page, seen = opened_page(browser, site, daemon.port, transport)
        page.evaluate('SyncServer.send(JSON.stringify({type: "subscribe", id: 1, '
                      'channels: ["room"]}))')
        subscribed = json.loads(next_data(page, seen))
        assert subscribed["type"] == "subscribed" and subscribed["channels"] == ["room"]
        first = daemon.publish_form("channel=room&message=one")[1]["events"][0]["id"]
        event = json.loads(next_data(page, seen))
        assert (event["type"], event["id"], event["data"]) == ("event", first, "one")
        page.close()
        daemon.publish_form("channel=room&message=two")  # (while nobody listens)
        page, seen = opened_page(browser, site, daemon.port, transport)
        page.evaluate('SyncServer.send(JSON.stringify({type: "subscribe", id: 2, '
                      f'channels: ["room"], lastEventId: "{first}"}}))')
        assert json.loads(next_data(page, seen))["type"] == "subscribed"
        assert json.loads(next_data(page, seen))["data"] == "two"
        page.close()
    finally:
        daemon.stop()


def websocket_session(port: int, session: str) -> socket.socket:
    """A raw socket that asked for a SockJS session over a WebSocket on /echo."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(f"GET /echo/000/{session}/websocket HTTP/1.1\r\nHost: x\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    return sock


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
        sock = websocket_session(daemon.port, "abc")
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


def post(port: int, path: str, body: bytes = b"") -> tuple[int, bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("POST", path, body, {"Content-Type": "text/plain;charset=UTF-8"})
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    return response.status, answer


def test_the_session_rules_over_http(tmp_path):
    """A daemon session over xhr speaks the WebSocket protocol (a ping answered with a
    pong in the next poll); /stats counts sessions by the transport a request waits on;
    a session that overflows --max-pending while events fan out is closed (1009) and
    the publish still answered; sessions end 5 s after their last request.  (The
    protocol's own rules: tests/test_sockjs_protocol.py.)"""
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo", "--sockjs-channels=c",
                    "--max-pending=2000")
    try:
        port = daemon.port
        assert ask(port, "POST", "/echo/000/s1/xhr").body == b"o\n"
        ping = json.dumps([json.dumps({"type": "ping", "id": 7})]).encode()
        assert ask(port, "POST", "/echo/000/s1/xhr_send", ping).status == 204
        frame = ask(port, "POST", "/echo/000/s1/xhr").body
        assert json.loads(json.loads(frame[1:])[0]) == {"type": "pong", "id": 7}
        waiting = held_poll(port, "/echo/000/s1/xhr")
        receivers(port, "xhr", 1)
        assert daemon.request("GET", "/stats")[1]["sockjs"]["sessions"] == 1
        assert daemon.publish_form("channel=c&message=one")[0] == 200
        assert waiting.head()[0] == 200 and waiting.exactly(9) == b'a["one"]\n'
        waiting.close()
        for _ in range(3):  # (nobody polls meanwhile: the session overflows)
            assert daemon.publish_form("channel=c&message=" + "x" * 900)[0] == 200
        assert ask(port, "POST", "/echo/000/s1/xhr").body.startswith(b"c[1009,")
        end = time.monotonic() + DEADLINE
        # sessions no request carries for 5 s end (SockJS's disconnect delay)
        while daemon.request("GET", "/stats")[1]["sockjs"]["sessions"]:
            assert time.monotonic() < end + DEADLINE, "sessions outlived their clients"
            time.sleep(0.1)
        assert daemon.request("GET", "/stats")[1]["connections"] == 0
    finally:
        daemon.stop()


BUNDLED = """<!doctype html><title>bundled</title><script src="/sockjs.min.js"></script>
<script src="%(daemon)s/static/cyclone-sse.js"></script><script>
const out = (...fields) => console.log(JSON.stringify(fields));
window.stream = CycloneSSE.connect("%(daemon)s/echo", {
  channels: ["a"], transport: "sockjs", retry: 200,
  onopen: () => out("open", window.stream.transport),
  onmessage: (e) => out("message", e.data, e.lastEventId)});
</script>"""


def test_the_bundled_client_over_sockjs_resumes_across_a_cut(tmp_path, browser,  # noqa: F811
                                                              site):
    """media/cyclone-sse.js with ``transport: "sockjs"``: the same callbacks and ids;
    its session cut, it opens another and resumes from its last id."""
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo")
    try:
        Pages.page = BUNDLED % {"daemon": f"http://127.0.0.1:{daemon.port}"}
        page = browser.new_page()
        seen: queue.Queue = queue.Queue()
        page.on("console", lambda message: seen.put(
            json.loads(message.text) if message.text.startswith("[") else ["log", ""]))
        page.goto(f"{site}/page")
        assert logged(page, seen) == ["open", "sockjs"]
        first = daemon.publish_form("channel=a&message=one")[1]["events"][0]["id"]
        assert logged(page, seen) == ["message", "one", first]
        page.evaluate("window.stream.socket.close()")  # (the session ends; it reconnects)
        second = daemon.publish_form("channel=a&message=two")[1]["events"][0]["id"]
        assert logged(page, seen) == ["open", "sockjs"]
        assert logged(page, seen) == ["message", "two", second]
        page.close()
    finally:
        daemon.stop()


def test_a_websocket_session_gets_heartbeats(tmp_path):
    """Every --ws-ping round a SockJS session over a WebSocket gets SockJS's ``h`` (and
    the WebSocket ping the round sends every connection)."""
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo", "--ws-ping=0.5")
    try:
        sock = websocket_session(daemon.port, "hb")
        data = b""
        while b"\x89\x00\x81\x01h" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        assert b"\x81\x01o" in data
        sock.close()
    finally:
        daemon.stop()


def test_sessions_are_bounded_like_connections(tmp_path):
    """A session outlives its requests: there are at most --max-connections of them
    (a new one past that is refused with 429, an existing one is served)."""
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo", "--max-connections=2")
    try:
        assert post(daemon.port, "/echo/000/one/xhr") == (200, b"o\n")
        assert post(daemon.port, "/echo/000/two/xhr") == (200, b"o\n")
        status, answer = post(daemon.port, "/echo/000/three/xhr")
        assert status == 429 and b"--max-connections" in answer
        ping = json.dumps([json.dumps({"type": "ping", "id": 1})]).encode()
        assert post(daemon.port, "/echo/000/one/xhr_send", ping) == (204, b"")
    finally:
        daemon.stop()


def test_the_articles_system_runs_in_one_command(tmp_path, browser, node_modules):  # noqa: F811
    """extras/sockjs_sync/run.py: the FORWARDER, the daemon and the Django site; two
    pages see each other's change.  (ZeroMQ PUB/SUB drops what is sent before the
    subscriptions reached the publisher: the first change is sent until one arrives.)"""
    import subprocess
    import sys

    from tests.daemon import ROOT
    from tests.services import free_port
    port, daemon_port, zmq_port = free_port(), free_port(), free_port()
    run = subprocess.Popen(
        [sys.executable, "extras/sockjs_sync/run.py", f"--port={port}",
         f"--daemon-port={daemon_port}", f"--zmq-port={zmq_port}"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        for line in run.stdout:
            if line.startswith("ready"):
                break
        threading.Thread(target=run.stdout.read, daemon=True).start()  # (drained)
        script = (node_modules / "sockjs-client" / "dist" / "sockjs.min.js").read_bytes()
        pages = []
        for _ in range(2):
            page = browser.new_page()
            page.route("https://cdn.jsdelivr.net/**", lambda route: route.fulfill(
                body=script, content_type="application/javascript"))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.body.dataset.open === '1'", timeout=20000)
            pages.append(page)
        first, second = pages
        end = time.monotonic() + DEADLINE
        while not first.evaluate("document.querySelectorAll('#notes li').length"):
            assert time.monotonic() < end, "no change ever came back"
            first.fill("#text", "from the first page")
            first.click("button")
            first.wait_for_timeout(300)
        second.fill("#text", "from the second page")
        second.click("button")
        for page in pages:
            page.wait_for_function("[...document.querySelectorAll('#notes li')].some("
                                   "li => li.textContent === 'from the second page')",
                                   timeout=20000)
            assert "from the first page" in page.inner_text("#notes")
            page.close()
    finally:
        run.terminate()
        run.wait(DEADLINE)


def test_jsonp_polling_over_http(tmp_path):
    """jsonp: the frame as a callback's argument (``/**/cb("o");``); a callback that is
    missing or could be script is refused (500); jsonp_send takes a form's ``d``."""
    import http.client
    import urllib.parse
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo")
    try:
        def get(path: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()

        assert get("/echo/000/j1/jsonp")[0] == 500
        assert get("/echo/000/j1/jsonp?c=alert(1)")[0] == 500
        assert get("/echo/000/j1/jsonp?c=_jp.a1") == (200, b'/**/_jp.a1("o");\r\n')
        ping = json.dumps([json.dumps({"type": "ping", "id": 9})])
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
        conn.request("POST", "/echo/000/j1/jsonp_send", urllib.parse.urlencode({"d": ping}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
        status, answer = get("/echo/000/j1/jsonp?c=_jp.a2")
        frame = json.loads(answer[len(b"/**/_jp.a2("):-len(b");\r\n")])
        assert status == 200 and json.loads(json.loads(frame[1:])[0]) == {"type": "pong",
                                                                          "id": 9}
    finally:
        daemon.stop()


def test_the_iframe_page(tmp_path):
    """``/echo/iframe.html`` (any ``iframe*.html``): loads ``--sockjs-url``, cached a
    year, its ETag answered 304."""
    import http.client
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo",
                    "--sockjs-url=https://example.com/sockjs-1.6.1.min.js")
    try:
        def get(path: str, headers: dict[str, str] | None = None):
            conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()

        response, page = get("/echo/iframe.html")
        assert response.status == 200
        assert b'<script src="https://example.com/sockjs-1.6.1.min.js">' in page
        assert b"SockJS.bootstrap_iframe()" in page
        assert response.getheader("Cache-Control") == "public, max-age=31536000"
        tag = response.getheader("ETag")
        assert get("/echo/iframe-a1.b2.html")[1] == page
        again, body = get("/echo/iframe.html", {"If-None-Match": tag})
        assert again.status == 304 and body == b""
    finally:
        daemon.stop()


def test_tokens_guard_the_default_channels_and_expire_the_session(tmp_path):
    """With ``s.*=token``: a session without a token is told (an error message) and
    gets nothing; with ``?token=`` on its URL (sockjs-client keeps the query of the
    URL it is given) it gets the channel's events, and is closed (4001) at the token's
    expiry, where the page opens another with a fresh one."""
    import jwt
    secret = "s" * 32
    daemon = Daemon(tmp_path, "--sockjs-prefix=/echo", "--sockjs-channels=s.1",
                    "--policies=s.*=token", f"--jwt-secret={secret}", "--http-secret=pub")
    try:
        port = daemon.port
        assert ask(port, "POST", "/echo/000/none/xhr").body == b"o\n"
        refused = json.loads(json.loads(ask(port, "POST", "/echo/000/none/xhr").body[1:])[0])
        assert refused["type"] == "error" and refused["code"] == 401
        signed = jwt.encode({"sub": "ann", "channels": ["s.*"],
                             "exp": int(time.time()) + 2}, secret)
        url = f"/echo/000/ann/xhr?token={signed}"
        assert ask(port, "POST", url).body == b"o\n"
        daemon.publish_form("channel=s.1&message=hello&key=pub")
        assert ask(port, "POST", url).body == b'a["hello"]\n'
        assert ask(port, "POST", url).body == (  # (held until exp, within DEADLINE)
            b'c[4001,"token expired: open a session with a fresh one"]\n')
    finally:
        daemon.stop()
    assert signed not in "".join(daemon.log)
