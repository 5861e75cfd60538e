"""Hostile input on the surfaces added after the first hardening round, each against a
real daemon with a healthy subscriber beside it that must lose nothing: WebSocket
compression bombs and deep JSON, deflate offers it cannot read, secrets in the log,
reserved event names and nesting on every ingestion path."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import time
import zlib
from pathlib import Path
from urllib.parse import unquote

import pytest
from websockets.sync.client import connect

from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.test_websocket import close_code, frame


def rss_kb(daemon: Daemon) -> int:
    """The daemon's resident memory, from /proc."""
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines()
                    if line.startswith("VmRSS:")).split()[1])


def no_traceback(daemon: Daemon) -> None:
    log = "".join(daemon.log)
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def upgrade(port: int, extensions: str | None = None) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake by hand: the socket and the daemon's answer head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def deflated(payload: bytes) -> bytes:
    """``payload`` compressed as permessage-deflate sends it (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def compressed_frame(payload: bytes) -> bytes:
    """A masked, final text frame with RSV1 set: a compressed message."""
    whole = frame(1, deflated(payload))
    return bytes([whole[0] | 0x40]) + whole[1:]


@pytest.fixture
def deflating(tmp_path):
    daemon = Daemon(tmp_path, "--ws-deflate=1")
    yield daemon
    daemon.stop()
    no_traceback(daemon)


def timed_stats(port: int) -> float:
    """Seconds /stats takes to answer, on a connection of its own."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while sock.recv(65536):
        pass
    sock.close()
    return time.monotonic() - start


def test_a_compression_bomb_is_refused_before_it_is_inflated(deflating):
    daemon = deflating
    bomb = compressed_frame(b" " * 60_000_000)  # 60 MB of spaces: ~58 KB on the wire
    assert len(bomb) < 64 * 1024  # under --ws-max-message as it arrives
    healthy = SSEClient(daemon.port, "channels=a")
    daemon.publish_form("channel=a&message=before")
    before = rss_kb(daemon)
    socks = []
    for _ in range(20):
        sock, head = upgrade(daemon.port, "permessage-deflate")
        assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" in head
        socks.append(sock)
    for sock in socks:
        sock.sendall(bomb)
    slowest = max(timed_stats(daemon.port) for _ in range(5))
    codes = [close_code(sock) for sock in socks]
    for sock in socks:
        sock.close()
    grown = rss_kb(daemon) - before
    print(f"RSS growth for 20 bombs: {grown} KB; slowest /stats meanwhile {slowest * 1000:.1f} ms")
    assert codes == [1009] * 20
    assert grown < 4096
    assert slowest < 0.1
    daemon.publish_form("channel=a&message=after")
    assert [e["data"] for e in healthy.events(2)] == ["before", "after"]
    healthy.close()


def test_a_bomb_split_into_fragments_is_bounded_per_message(deflating):
    """Each fragment is small; the message they inflate to is not."""
    compressed = deflated(b"x" * 10_000_000)
    parts = [compressed[i:i + 8000] for i in range(0, len(compressed), 8000)]
    sock, head = upgrade(deflating.port, "permessage-deflate")
    assert head.startswith(b"HTTP/1.1 101")
    data = b""
    for n, part in enumerate(parts):
        whole = frame(1 if n == 0 else 0, part)
        first = (0x40 | 0x01) if n == 0 else 0x00  # RSV1 on the first frame only
        data += bytes([first | (0x80 if n == len(parts) - 1 else 0)]) + whole[1:]
    sock.sendall(data)
    assert close_code(sock) == 1009
    sock.close()


def test_compressed_messages_within_the_limit_still_work(deflating):
    """The websockets client negotiates permessage-deflate and compresses what it sends."""
    big = "y" * 60_000  # close to the limit, once inflated
    with connect(f"ws://127.0.0.1:{deflating.port}/", open_timeout=DEADLINE) as conn:
        assert "permessage-deflate" in conn.response.headers["Sec-WebSocket-Extensions"]
        for n in range(3):  # the same context, several messages
            conn.send(json.dumps({"type": "ping", "id": n, "pad": big}))
            assert json.loads(conn.recv(timeout=DEADLINE)) == {"type": "pong", "id": n}


@pytest.mark.parametrize("offer", [
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; client_max_window_bits=99",
])
def test_a_deflate_offer_it_cannot_read_is_declined_not_a_500(deflating, offer):
    sock, head = upgrade(deflating.port, offer)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-extensions" not in head.lower()  # declined (RFC 7692 5.1)
    sock.sendall(frame(1, json.dumps({"type": "ping", "id": 1}).encode()))
    answer = sock.recv(100)
    assert json.loads(answer[2:]) == {"type": "pong", "id": 1}
    sock.close()


def test_deeply_nested_json_closes_with_1008_and_one_clean_log_line(tmp_path):
    daemon = Daemon(tmp_path)
    try:
        healthy = SSEClient(daemon.port, "channels=a")
        for _ in range(20):
            sock, head = upgrade(daemon.port)
            assert head.startswith(b"HTTP/1.1 101")
            sock.sendall(frame(1, b"[" * 1000 + b"]" * 1000))
            assert close_code(sock) == 1008
            sock.close()
            sock, _ = upgrade(daemon.port)
            sock.sendall(frame(1, json.dumps({"type": "ping", "id": 1, "x": json.loads(
                "[" * 40 + "]" * 40)}).encode()))
            assert close_code(sock) == 1008  # past 32 levels, even when Python could
            sock.close()
        daemon.publish_form("channel=a&message=fine")
        assert healthy.events(1)[0]["data"] == "fine"
        healthy.close()
    finally:
        daemon.stop()
    no_traceback(daemon)
    assert len(daemon.log) < 30  # start-up and stop lines only: nothing per message


# secrets never reach the log ---------------------------------------------------------

JWT_SECRET = "hostile-test-secret-of-at-least-32-bytes!"
PUBLISH_KEY = "publish-key-that-must-stay-private"


def spellings(name: str) -> list[str]:
    """``name`` as a query parser reads it, however a client escapes it."""
    escaped = "".join(f"%{ord(c):02x}" for c in name)
    return [name, name.upper(), f"%{ord(name[0]):02x}{name[1:]}", escaped,
            name[:-1] + f"%{ord(name[-1]):02X}"]


def test_no_secret_reaches_the_log_however_its_name_is_encoded(tmp_path):
    import jwt as pyjwt
    daemon = Daemon(tmp_path, f"--jwt-secret={JWT_SECRET}", "--policies=p.*=token",
                    f"--http-secret={PUBLISH_KEY}", "--access-log=1", "--poll-timeout=0.1")
    tokens = []
    try:
        for n, spelled in enumerate(spellings("token")):
            token = pyjwt.encode({"sub": f"user{n}", "channels": ["p.a"],
                                  "exp": int(time.time()) + 600}, JWT_SECRET)
            tokens.append(token)
            ok = SSEClient(daemon.port, f"channels=p.a&{spelled}={token}")
            # read as the token when it decodes to the name (TOKEN does not)
            read = unquote(spelled) == "token"
            assert ok.status == (200 if read else 401), spelled
            ok.close()
            refused = SSEClient(daemon.port, f"channels=p.b&{spelled}={token}")
            assert refused.status == (403 if read else 401)
            refused.close()
            assert daemon.request("GET", f"/?channels=p.a&transport=poll"
                                         f"&{spelled}={token}")[0] == (200 if read else 401)
            sock, _head = upgrade(daemon.port)
            sock.close()
            assert daemon.request("GET", f"/nowhere?{spelled}={token}")[0] == 404
        for spelled in spellings("key") + spellings("access_token") + spellings("jwt"):
            status, _body = daemon.request(
                "POST", f"/publish?{spelled}={PUBLISH_KEY}", "channel=a&message=x",
                {"Content-Type": "application/x-www-form-urlencoded"})
            assert status in (400, 401)
            assert daemon.request("GET", f"/stats?{spelled}={PUBLISH_KEY}")[0] == 200
    finally:
        daemon.stop()
    log = "".join(daemon.log)
    assert "/nowhere?" in log and "/publish?" in log  # the requests were logged...
    for secret in [*tokens, PUBLISH_KEY]:  # ...their secrets never, in any form
        for form in {secret, secret.split(".")[-1], base64.b64encode(secret.encode()).decode()}:
            assert form not in log
    no_traceback(daemon)


# GRIP proxy answers: the backend's headers only, checked -------------------------------

class ThreadedServer:
    """A listening socket on loopback; each connection is handled in a thread of its
    own by ``handle``."""

    def __init__(self) -> None:
        import threading
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    @staticmethod
    def read_head(conn: socket.socket) -> bytes | None:
        """A request's line and headers (None: the peer closed first)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.listener.close()


class RawBackend(ThreadedServer):
    """A backend that answers each path with canned bytes (what no framework would
    send); ``seen`` lists the request targets it was sent."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.seen: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            head = self.read_head(conn)
            if head is None:
                return
            target = head.split(b" ", 2)[1].decode()
            self.seen.append(target)
            answer = self.answers.get(target.partition("?")[0], b"HTTP/1.1 404 Not Found\r\n"
                                      b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            try:
                conn.sendall(answer)
            except OSError:
                pass


def plain(status: str, headers: list[str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}",
             "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def raw_get(port: int, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers in order, body) of one answer, read to the close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = [(n.strip().lower(), v.strip()) for n, _, v in (x.partition(":") for x in lines)]
    return status, headers, body


@pytest.fixture
def grip_site(tmp_path):
    script = b"<html><body><script>document.title='ran'</script>hi</body></html>"
    backend = RawBackend({
        "/api/typed": plain("200 OK", ["Content-Type: text/event-stream",
                                       "Date: Mon, 01 Jan 2024 00:00:00 GMT",
                                       "Server: backend", "Cache-Control: private",
                                       "Connection: close, X-Internal",
                                       "X-Internal: secret-hop", "Keep-Alive: timeout=5",
                                       "Grip-Whatever: 1"], b"data: x\n\n"),
        "/api/untyped": plain("200 OK", [], script),
        "/api/huge-head": plain("200 OK", [f"X-Filler-{n}: {'v' * 1000}"
                                           for n in range(20000)], b"x"),
        "/api/status": plain("200 OK", ["Grip-Hold: response", "Grip-Channel: s",
                                        "Grip-Status: 99999"]),
        "/api/backend-status": plain("99 Odd", ["Content-Type: text/plain"], b"?"),
        "/api/nan": plain("200 OK", ["Grip-Hold: response", "Grip-Channel: s",
                                     "Grip-Timeout: nan"]),
        "/api/negative": plain("200 OK", ["Grip-Hold: response", "Grip-Channel: s",
                                          "Grip-Timeout: -5"]),
        "/api/zero": plain("200 OK", ["Grip-Hold: response", "Grip-Channel: s",
                                      "Grip-Timeout: 0", "Content-Type: text/plain"],
                           b"timed out\n"),
        "/api/huge": plain("200 OK", ["Grip-Hold: response", "Grip-Channel: s",
                                      "Grip-Timeout: 1e308", "Content-Type: text/plain"],
                           b"cut\n"),
    })
    daemon = Daemon(tmp_path, f"--grip-proxy=/api/=http://127.0.0.1:{backend.port}",
                    "--grip-max-timeout=1.5")
    yield daemon, backend
    daemon.stop()
    backend.close()
    no_traceback(daemon)


def test_a_grip_answer_carries_the_backends_headers_once_and_no_hop_by_hop(grip_site):
    daemon, _ = grip_site
    status, headers, body = raw_get(daemon.port, "/api/typed")
    names = [name for name, _ in headers]
    assert status == "HTTP/1.1 200 OK" and body == b"data: x\n\n"
    assert dict(headers)["content-type"] == "text/event-stream"
    for name in ("content-type", "date", "server", "cache-control"):
        assert names.count(name) == 1, (name, headers)
    assert dict(headers)["server"] == "backend"
    assert dict(headers)["date"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert "x-internal" not in names and "keep-alive" not in names  # listed in Connection
    assert not any(name.startswith("grip-") for name in names)
    # none of the daemon's own defaults were added
    assert "access-control-allow-origin" not in names and "x-content-type-options" not in names


def test_a_grip_answer_without_a_type_is_never_guessed_as_html(grip_site, tmp_path):
    daemon, _ = grip_site
    _status, headers, _body = raw_get(daemon.port, "/api/untyped")
    names = [name for name, _ in headers]
    assert "content-type" not in names  # the backend's headers, no text/html of ours
    assert dict(headers)["x-content-type-options"] == "nosniff"
    assert names.count("date") == 1  # added once: the backend sent none
    chromium = shutil.which("chromium")
    if chromium is None:
        assert os.environ.get("CI") != "true", "CI must have Chromium"
        pytest.skip("no chromium")
    import subprocess
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom",
                          f"http://127.0.0.1:{daemon.port}/api/untyped"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "<title>ran</title>" not in dom  # the script did not run


@pytest.mark.parametrize("path,reason", [
    ("/api/huge-head", "--grip-max-head"),
    ("/api/status", "'99999' is not a status"),
    ("/api/backend-status", "status 99 is not a final HTTP status"),
    ("/api/nan", "Grip-Timeout"),
    ("/api/negative", "Grip-Timeout"),
])
def test_grip_answers_past_a_bound_or_unreadable_are_a_clear_502(grip_site, path, reason):
    daemon, _ = grip_site
    before = rss_kb(daemon)
    status, _, body = raw_get(daemon.port, path)
    assert status.startswith("HTTP/1.1 502") and reason in json.loads(body)["error"]
    assert rss_kb(daemon) - before < 8192  # the 20 MB head was not kept


@pytest.mark.parametrize("path,body", [("/api/zero", b"timed out\n"), ("/api/huge", b"cut\n")])
def test_grip_timeouts_are_clamped_to_the_bounds(grip_site, path, body):
    daemon, _ = grip_site
    started = time.monotonic()
    status, _, got = raw_get(daemon.port, path)
    waited = time.monotonic() - started
    assert status.startswith("HTTP/1.1 200") and got == body
    assert 0.9 <= waited < 1.5 + 1.0  # at least 1 s, at most --grip-max-timeout


@pytest.mark.parametrize("path", ["/api/../stats", "/api/%2e%2e/stats", "/api/./typed",
                                  "/api/x/%2E%2E/%2e%2E/stats"])
def test_dot_segments_are_refused_not_forwarded(grip_site, path):
    daemon, backend = grip_site
    status, _, body = raw_get(daemon.port, path)
    assert status.startswith("HTTP/1.1 400") and "'..' segments" in json.loads(body)["error"]
    assert not backend.seen


# an auth callback that stalls mid-answer --------------------------------------------

class StallingApplication(ThreadedServer):
    """An auth application that sends its head and 11 of 100 body bytes, then waits;
    it counts the connections it got and those the daemon closed."""

    def __init__(self) -> None:
        import threading
        self.closed_by_daemon = 0
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()  # (handlers finish in threads of their own)
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        self.held.append(conn)
        try:
            if self.read_head(conn) is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n" + b'{"allow": [')
            conn.settimeout(DEADLINE)
            while conn.recv(65536):  # the rest of the request body, then the daemon's close
                pass
        except OSError:
            return
        with self.lock:
            self.closed_by_daemon += 1

    def close(self) -> None:
        super().close()
        for conn in self.held:  # now the application lets go: nothing may break
            conn.close()


APP_KEY = "app-key-never-logged"


def test_an_auth_callback_that_stalls_mid_answer_holds_no_connection_open(tmp_path):
    app = StallingApplication()
    daemon = Daemon(tmp_path, "--policies=c.*=callback", "--auth-timeout=0.5",
                    f"--auth-url=http://127.0.0.1:{app.port}/auth?key={APP_KEY}",
                    "--auth-cache=0")
    try:
        healthy = SSEClient(daemon.port, "channels=a")
        for n in range(10):
            refused = SSEClient(daemon.port, f"channels=c.{n}")
            assert refused.status == 503
            refused.close()
        end = time.monotonic() + DEADLINE
        while app.closed_by_daemon < app.accepted and time.monotonic() < end:
            time.sleep(0.05)  # (the daemon's close travels to the application's thread)
        assert app.accepted >= 10 and app.closed_by_daemon == app.accepted
        app.close()
        daemon.publish_form("channel=a&message=fine")
        assert healthy.events(1)[0]["data"] == "fine"
        healthy.close()
    finally:
        daemon.stop()
        app.close()
    no_traceback(daemon)
    log = "".join(daemon.log)
    assert "AlreadyCalled" not in log and "Starting factory" not in log.replace(
        "Starting factory <cyclone_sse.app", "")
    assert log.count("refusing its channels") == 1
    assert APP_KEY not in log and "/auth?key=***" in log


# the same publish checks on every ingestion path --------------------------------------

DEEP = "[" * 40 + "]" * 40  # past the 32 levels any client JSON may nest


def test_zeromq_refuses_reserved_names_and_deep_items_as_http_does(tmp_path):
    import zmq

    from tests.services import free_port
    from tests.test_zmq import heard
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    daemon = Daemon(tmp_path, "--broker=zmq", f"--zmq-bind={endpoint}")
    context = zmq.Context()
    try:
        pub = context.socket(zmq.PUB)
        pub.connect(endpoint)
        heard(pub, daemon.port)
        stream = SSEClient(daemon.port, "channels=news")
        for name in ("history-gap", "token-expired", "stream-open", "channel"):
            pub.send_multipart([b"news", b"forged", name.encode()])
        pub.send_multipart([b"news", b"J" + json.dumps(
            {"formats": {"http-stream": {"content": "event: history-gap\ndata: x\n\n"}}}
        ).encode()])
        pub.send_multipart([b"news", b'J{"formats": {"ws-message": {"content": ' +
                            DEEP.encode() + b"}}}"])
        nested = b"0:}"
        for _ in range(40):  # a TNetString dict in a dict in a dict...
            payload = b"1:k," + nested
            nested = str(len(payload)).encode() + b":" + payload + b"}"
        pub.send_multipart([b"news", nested])
        pub.send_multipart([b"news", b"real"])
        events = stream.events(1)
        assert [(e["event"], e["data"]) for e in events] == [("message", "real")]
        stats = daemon.request("GET", "/stats")[1]["broker"]
        assert stats["rejected"] == 7 and stats["received"] >= 2
        stream.close()
    finally:
        context.destroy(linger=0)
        daemon.stop()
    no_traceback(daemon)
    assert "".join(daemon.log).count("ignored ZeroMQ message") == 1  # logged once


def test_amqp_refuses_reserved_names_and_long_ids_as_http_does(tmp_path):
    import kombu

    from tests.services import AMQP, require_spec
    from tests.test_amqp import amqp_daemon
    require_spec()
    exchange = f"hostile-{os.getpid()}-{time.monotonic_ns()}"
    daemon = amqp_daemon(tmp_path, exchange)
    try:
        stream = SSEClient(daemon.port, "channels=jobs")
        with kombu.Connection(f"amqp://guest:guest@{AMQP[0]}:{AMQP[1]}//") as connection:
            producer = connection.Producer()
            target = kombu.Exchange(exchange, type="direct", durable=True)
            for extra in ({"type": "history-gap"}, {"type": "token-expired"},
                          {"message_id": "x" * 250}, {}):  # (an AMQP shortstr: <= 255)
                producer.publish("payload", exchange=target, routing_key="jobs",
                                 serializer=None, content_type="text/plain", **extra)
        events = stream.events(1)
        assert [(e["event"], e["data"]) for e in events] == [("message", "payload")]
        assert daemon.request("GET", "/stats")[1]["broker"]["rejected"] == 3
        stream.close()
    finally:
        daemon.stop()
    no_traceback(daemon)


@pytest.mark.parametrize("item,error", [
    ({"channel": "a", "formats": {"http-stream": {"content": {"an": "object"}}}},
     "'content' must be a string"),
    ({"channel": "a", "formats": {"ws-message": {}}}, "needs 'content' or 'content-bin'"),
    ({"channel": "a", "formats": {"http-response": {"body": 7}}}, "'body' must be a string"),
    ({"channel": "a", "formats": {"http-stream": {"content": "event: history-gap\ndata: x"
                                                             "\n\n"}}}, "reserved"),
    ({"channel": "a", "formats": {"ws-message": {"content": "x"}}, "deep": json.loads(DEEP)},
     "nested deeper than 32"),
])
def test_pushpins_publish_refuses_what_would_publish_nothing_or_too_much(tmp_path, item,
                                                                         error):
    daemon = Daemon(tmp_path)
    try:
        stream = SSEClient(daemon.port, "channels=a")
        status, body = daemon.request("POST", "/publish/", json.dumps({"items": [item]}),
                                      {"Content-Type": "application/json"})
        assert status == 400 and error in body["error"]
        daemon.publish_form("channel=a&message=real")
        assert [e["data"] for e in stream.events(1)] == ["real"]
        stream.close()
    finally:
        daemon.stop()
    no_traceback(daemon)


# the open-file limit ----------------------------------------------------------------

def test_at_the_kernels_file_limit_closes_are_counted_and_logged_once(tmp_path):
    # --max-connections above what the process may open: the kernel's limit comes first
    daemon = Daemon(tmp_path, "--max-connections=5000", open_files=128)
    socks = []
    try:
        healthy = SSEClient(daemon.port, "channels=a")
        for _ in range(250):
            socks.append(socket.create_connection(("127.0.0.1", daemon.port),
                                                  timeout=DEADLINE))
        # the daemon holds what it could and closes the rest unanswered; once some of
        # the held ones end, it answers again
        import selectors
        selector = selectors.DefaultSelector()
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        end = time.monotonic() + DEADLINE
        closed = 0
        while closed < 100 and time.monotonic() < end:  # closed unanswered: EOF at once
            for key, _ in selector.select(end - time.monotonic()):
                selector.unregister(key.fileobj)
                closed += 1
        selector.close()
        assert closed >= 100
        for sock in socks:
            sock.close()
        socks.clear()
        stats = None
        while time.monotonic() < end:  # (the held ones are closed by now)
            try:
                _status, stats = daemon.request("GET", "/stats")
                break
            except (ConnectionError, OSError):
                time.sleep(0.05)
        assert stats is not None and stats["closed_at_file_limit"] >= 50, stats
        daemon.publish_form("channel=a&message=still+here")
        assert healthy.events(1)[0]["data"] == "still here"
        healthy.close()
    finally:
        for sock in socks:
            sock.close()
        daemon.stop()
    no_traceback(daemon)
    log = "".join(daemon.log)
    assert "EMFILE" not in log.replace("(EMFILE)", "")  # none of Twisted's per-socket lines
    assert log.count("at its open-file limit") == 1
