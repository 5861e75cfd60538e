"""The SockJS protocol's rules (what sockjs-protocol's suite checks of every server),
against the daemon's ``--sockjs-test-services``: ``/echo`` sends back what a session
sends, ``/close`` closes each session at once with ``c[3000,"Go away!"]``,
``/disabled_websocket_echo`` offers no WebSocket, ``/cookie_needed_echo`` sets
``JSESSIONID``; their streams end after 4,096 bytes.  Raw sockets throughout: the
rules are about bytes, chunks and headers."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from typing import NamedTuple

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.daemon import DEADLINE, Daemon

NOT_CACHED = "no-store, no-cache, no-transform, must-revalidate, max-age=0"


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("sockjs"), "--sockjs-test-services=1")
    yield daemon.port
    daemon.stop()


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One HTTP connection, read byte by byte as the protocol's rules need."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.buffer = b""

    def send(self, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes = b"", version: str = "1.1") -> tuple[int, str, dict[str, str]]:
        self.request(method, path, headers, body, version)
        return self.head()

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"", version: str = "1.1") -> None:
        lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def head(self) -> tuple[int, str, dict[str, str]]:
        first = self.line().decode()
        read: dict[str, str] = {}
        while line := self.line():
            name, _, value = line.decode().partition(":")
            read[name.strip().lower()] = value.strip()
        return int(first.split()[1]), first.split()[0], read

    def fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            assert self.fill(), self.buffer
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert self.fill(), self.buffer
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def chunk(self) -> bytes:
        """The next chunk of a chunked body (b"" for the last)."""
        size = int(self.line(), 16)
        data = self.exactly(size + 2)
        assert data.endswith(b"\r\n")
        return data[:-2]

    def body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return self.exactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            return b"".join(iter(self.chunk, b""))
        return self.rest()

    def rest(self) -> bytes:
        """Everything until the daemon closes the connection."""
        while self.fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def close(self) -> None:
        self.sock.close()


def ask(port: int, method: str, path: str, body: bytes = b"",
        **headers: str) -> Answer:
    connection = Connection(port)
    try:
        status, _, read = connection.send(method, path, {k.replace("_", "-"): v for k, v in
                                                         headers.items()}, body)
        return Answer(status, read, b"" if status in (204, 304) else connection.body(read))
    finally:
        connection.close()


def stream(port: int, path: str, method: str = "POST",
           **headers: str) -> tuple[Connection, int, dict[str, str]]:
    connection = Connection(port)
    status, _, read = connection.send(method, path, {k.replace("_", "-"): v
                                                     for k, v in headers.items()})
    return connection, status, read


def held_poll(port: int, path: str) -> Connection:
    """A poll sent and not read: it waits in the daemon for the session's frames."""
    connection = Connection(port)
    connection.request("POST", path)
    return connection


def new_session(base: str = "/echo") -> str:
    return f"{base}/000/{uuid.uuid4()}"


def assert_cors(answer: Answer | dict[str, str], origin: str | None) -> None:
    headers = answer.headers if isinstance(answer, Answer) else answer
    if origin:
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-allow-credentials"] == "true"
    else:
        assert headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in headers


def assert_not_cached(headers: dict[str, str]) -> None:
    assert headers["cache-control"] == NOT_CACHED
    assert "expires" not in headers and "last-modified" not in headers


def assert_cached_for_a_year(headers: dict[str, str]) -> None:
    assert "public" in headers["cache-control"]
    assert re.search(r"max-age=[1-9][0-9]{6}", headers["cache-control"])
    assert headers["expires"]


def assert_options(port: int, path: str, methods: str) -> None:
    for origin in ("test", "null"):
        answer = ask(port, "OPTIONS", path, Origin=origin,
                     Access_Control_Request_Method=methods)
        assert answer.status in (200, 204) and not answer.body
        assert_cached_for_a_year(answer.headers)
        assert int(answer.headers["access-control-max-age"]) > 1000000
        for method in methods.split(","):
            assert method.strip() in answer.headers["access-control-allow-methods"]
        assert_cors(answer, origin)


def content_type(answer: Answer | dict[str, str]) -> str:
    headers = answer.headers if isinstance(answer, Answer) else answer
    return headers["content-type"].replace(" ", "")


# the endpoint's static answers ---------------------------------------------------------

def test_greeting_and_not_found(port):
    for path in ("/echo", "/echo/"):
        answer = ask(port, "GET", path)
        assert answer.status == 200 and answer.body == b"Welcome to SockJS!\n"
        assert content_type(answer) == "text/plain;charset=UTF-8"
        assert "set-cookie" not in answer.headers
    for suffix in ("/a", "/a.html", "//", "///", "/a/a", "/a/a/"):
        assert ask(port, "GET", "/echo" + suffix).status == 404


def test_greeting_keeps_http_1_0_and_1_1_connections_alike(port):
    for version in ("1.0", "1.1"):
        connection = Connection(port)
        status, _, headers = connection.send("GET", "/echo", {
            "Connection": "Keep-Alive"}, version=version)
        assert status == 200 and "transfer-encoding" not in headers
        assert connection.exactly(int(headers["content-length"])) == b"Welcome to SockJS!\n"
        if headers.get("connection", "").lower() != "close":
            assert connection.send("GET", "/echo", {"Connection": "Keep-Alive"},
                                   version=version)[0] == 200
        connection.close()


IFRAME = re.compile(r"""<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="(?P<url>[^"]*)"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe\(\);
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>[^<]*</p>
</body>
</html>""")


def test_the_iframe_page_in_every_version_and_its_cache(port):
    for suffix in ("/iframe.html", "/iframe-a.html", "/iframe-.html", "/iframe-0.1.2.html",
                   "/iframe-0.1.2abc-dirty.2144.html", "/iframe-a.html?t=1234"):
        answer = ask(port, "GET", "/echo" + suffix)
        assert answer.status == 200, suffix
        assert content_type(answer) == "text/html;charset=UTF-8"
        assert_cached_for_a_year(answer.headers)
        assert answer.headers["etag"] and "last-modified" not in answer.headers
        assert "set-cookie" not in answer.headers
        match = IFRAME.fullmatch(answer.body.decode().strip())
        assert match and match["url"].startswith("https://")
    tag = ask(port, "GET", "/echo/iframe.html").headers["etag"]
    assert ask(port, "GET", "/echo/iframe.html").headers["etag"] == tag
    again = ask(port, "GET", "/echo/iframe.html", If_None_Match=tag)
    assert again.status == 304 and "content-type" not in again.headers
    for suffix in ("/iframe.htm", "/iframe", "/IFRAME.HTML", "/IFRAME", "/iframe.HTML",
                   "/iframe.xml", "/iframe-/.html"):
        assert ask(port, "GET", "/echo" + suffix).status == 404, suffix


def test_info(port):
    answer = ask(port, "GET", "/echo/info", Origin="test")
    assert answer.status == 200
    assert content_type(answer) == "application/json;charset=UTF-8"
    assert "set-cookie" not in answer.headers
    assert_not_cached(answer.headers)
    assert_cors(answer, "test")
    info = json.loads(answer.body)
    assert info["websocket"] is True and info["cookie_needed"] in (True, False)
    assert info["origins"] == ["*:*"] and isinstance(info["entropy"], int)
    assert json.loads(ask(port, "GET", "/echo/info").body)["entropy"] != info["entropy"]
    assert_options(port, "/echo/info", "OPTIONS, GET")
    answer = ask(port, "OPTIONS", "/echo/info", Origin="null",
                 Access_Control_Request_Method="POST")
    assert answer.status in (200, 204) and answer.headers["access-control-allow-origin"] \
        == "null"
    assert json.loads(ask(port, "GET", "/disabled_websocket_echo/info").body)[
        "websocket"] is False
    cookie = ask(port, "GET", "/cookie_needed_echo/info")
    assert json.loads(cookie.body)["cookie_needed"] is True
    assert "set-cookie" not in cookie.headers


# sessions over xhr ------------------------------------------------------------------------

def test_session_urls(port):
    for part in ("/a/a", "/_/_", "/1/1", "/abcdefgh_i-j%20/abcdefg_i-j%20"):
        key = uuid.uuid4().hex[:6]
        assert ask(port, "POST", f"/echo{part}{key}/xhr").body == b"o\n"
    for part in ("//", "/a./a", "/a/a.", "/./.", "/", "///"):
        assert ask(port, "GET", f"/echo{part}/xhr").status == 404
        assert ask(port, "POST", f"/echo{part}/xhr").status == 404
    key = uuid.uuid4()
    assert ask(port, "POST", f"/echo/000/{key}/xhr").body == b"o\n"
    assert ask(port, "POST", f"/echo/000/{key}/xhr_send", b'["a"]').status == 204
    assert ask(port, "POST", f"/echo/999/{key}/xhr").body == b'a["a"]\n'  # (server id)


def test_a_session_over_xhr(port):
    url = new_session()
    answer = ask(port, "POST", url + "/xhr", Origin="test")
    assert (answer.status, answer.body) == (200, b"o\n")
    assert content_type(answer) == "application/javascript;charset=UTF-8"
    assert_cors(answer, "test")
    assert_not_cached(answer.headers)
    sent = ask(port, "POST", url + "/xhr_send", b'["x"]', Origin="test")
    assert (sent.status, sent.body) == (204, b"")
    assert content_type(sent) == "text/plain;charset=UTF-8"
    assert_cors(sent, "test")
    assert_not_cached(sent.headers)
    assert ask(port, "POST", url + "/xhr").body == b'a["x"]\n'
    assert ask(port, "POST", "/echo/000/bad_session/xhr_send", b'["a"]').status == 404
    # a second receiver while one waits is refused
    waiting = held_poll(port, url + "/xhr")
    receivers(port, "xhr", 1)
    try:
        refused = ask(port, "POST", url + "/xhr")
        assert (refused.status, refused.body) == (
            200, b'c[2010,"Another connection still open"]\n')
    finally:
        waiting.close()
    for suffix in ("/xhr", "/xhr_send"):
        assert_options(port, "/echo/abc/abc" + suffix, "OPTIONS, POST")


def test_a_closed_session_says_so_until_it_is_forgotten(port):
    url = new_session("/close")
    assert ask(port, "POST", url + "/xhr").body == b"o\n"
    for _ in range(2):
        answer = ask(port, "POST", url + "/xhr")
        assert (answer.status, answer.body) == (200, b'c[3000,"Go away!"]\n')


def test_what_xhr_send_refuses_and_accepts(port):
    url = new_session()
    assert ask(port, "POST", url + "/xhr").body == b"o\n"
    broken = ask(port, "POST", url + "/xhr_send", b'["x')
    assert broken.status == 500 and b"Broken JSON encoding." in broken.body
    empty = ask(port, "POST", url + "/xhr_send")
    assert empty.status == 500 and b"Payload expected." in empty.body
    assert ask(port, "POST", url + "/xhr_send", b"[]").status == 204  # (a frame, no message)
    types = ["text/plain", "T", "application/json", "application/xml", "",
             "application/json; charset=utf-8", "text/xml; charset=utf-8", "text/xml"]
    for kind in types:
        assert ask(port, "POST", url + "/xhr_send", b'["a"]', Content_Type=kind).status \
            == 204
    assert ask(port, "POST", url + "/xhr").body == b"a[" + b",".join(
        [b'"a"'] * len(types)) + b"]\n"
    for asked, echoed in (("a, b, c", "a, b, c"), ("", None), (None, None)):
        extra = {} if asked is None else {"Access_Control_Request_Headers": asked}
        answer = ask(port, "OPTIONS", new_session() + "/xhr", Origin="test",
                     Access_Control_Request_Method="POST", **extra)
        assert answer.status in (200, 204)
        assert_cors(answer, "test")
        assert answer.headers.get("access-control-allow-headers") == echoed


# sessions over WebSockets ---------------------------------------------------------------

def ws_url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def test_websocket_refusals(port):
    assert ask(port, "GET", "/echo/0/0/websocket").status == 400
    assert ask(port, "GET", "/echo/0/0/websocket", Upgrade="WebSocket",
               Connection="close").status == 400
    for headers in ({"Upgrade": "WebSocket", "Connection": "Upgrade"}, {}):
        answer = ask(port, "POST", "/echo/0/0/websocket",
                     **{k.replace("-", "_"): v for k, v in headers.items()})
        assert answer.status == 405 and answer.headers["allow"] and not answer.body
        assert "content-type" not in answer.headers
    assert ask(port, "GET", "/disabled_websocket_echo/0/0/websocket",
               Upgrade="websocket", Connection="Upgrade").status == 404


def test_a_session_over_a_websocket(port):
    with connect(ws_url(port, new_session() + "/websocket")) as ws:
        assert ws.recv(DEADLINE) == "o"
        ws.send("")  # (ignored, as a frame of no messages is)
        ws.send("[]")
        ws.send('["a"]')
        assert ws.recv(DEADLINE) == 'a["a"]'
    with connect(ws_url(port, new_session("/close") + "/websocket")) as ws:
        assert ws.recv(DEADLINE) == "o"
        assert ws.recv(DEADLINE) == 'c[3000,"Go away!"]'
        with pytest.raises(ConnectionClosed):
            ws.recv(DEADLINE)
    with connect(ws_url(port, new_session() + "/websocket")) as ws:
        assert ws.recv(DEADLINE) == "o"
        ws.send('["a')  # broken JSON: the connection ends
        with pytest.raises(ConnectionClosed):
            while True:
                assert ws.recv(DEADLINE).startswith("c[")


def test_websocket_sessions_may_share_an_id(port):
    url = ws_url(port, new_session() + "/websocket")
    with connect(url) as one, connect(url) as two:
        assert one.recv(DEADLINE) == "o" and two.recv(DEADLINE) == "o"
        one.send('["a"]')
        two.send('["b"]')
        assert one.recv(DEADLINE) == 'a["a"]' and two.recv(DEADLINE) == 'a["b"]'
    with connect(url) as again:
        assert again.recv(DEADLINE) == "o"


def test_websocket_handshake_headers(port):
    for connection in ("Upgrade", "keep-alive, Upgrade"):
        link, status, headers = stream(
            port, new_session() + "/websocket", "GET", Upgrade="websocket",
            Connection=connection, Sec_WebSocket_Version="13",
            Sec_WebSocket_Key="x3JJHMbDL1EzLkh9GBhXDw==")
        link.close()
        assert status == 101
        assert headers["sec-websocket-accept"] == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        assert headers["connection"].lower() == "upgrade"
        assert headers["upgrade"].lower() == "websocket"
        assert "content-length" not in headers


def test_the_raw_websocket(port):
    with connect(ws_url(port, "/echo/websocket")) as ws:
        ws.send("Hello world!\uffff")
        assert ws.recv(DEADLINE) == "Hello world!\uffff"
    with connect(ws_url(port, "/close/websocket")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(DEADLINE)
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "Go away!"


# streaming transports ------------------------------------------------------------------

def test_xhr_streaming(port):
    url = new_session()
    link, status, headers = stream(port, url + "/xhr_streaming", Origin="test")
    try:
        assert status == 200
        assert content_type(headers) == "application/javascript;charset=UTF-8"
        assert_cors(headers, "test")
        assert_not_cached(headers)
        assert link.chunk() == b"h" * 2048 + b"\n"
        assert link.chunk() == b"o\n"
        assert ask(port, "POST", url + "/xhr_send", b'["x"]').status == 204
        assert link.chunk() == b'a["x"]\n'
    finally:
        link.close()
    assert_options(port, "/echo/abc/abc/xhr_streaming", "OPTIONS, POST")


def test_a_stream_ends_at_its_limit(port):
    """4,096 bytes of frames (without the prelude) on the test services."""
    url = new_session()
    link, _, _ = stream(port, url + "/xhr_streaming")
    message = b'"' + b"x" * 128 + b'"'
    try:
        assert link.chunk() and link.chunk() == b"o\n"
        for _ in range(31):
            assert ask(port, "POST", url + "/xhr_send", b"[" + message + b"]").status == 204
            assert link.chunk() == b"a[" + message + b"]\n"
        assert link.chunk() == b"" and link.rest() == b""
    finally:
        link.close()


def test_eventsource(port):
    url = new_session()
    link, status, headers = stream(port, url + "/eventsource", "GET")
    try:
        assert status == 200 and content_type(headers) == "text/event-stream"
        assert_not_cached(headers)
        assert link.chunk() == b"\r\n"
        assert link.chunk() == b"data: o\r\n\r\n"
        assert ask(port, "POST", url + "/xhr_send", b'["x"]').status == 204
        assert link.chunk() == b'data: a["x"]\r\n\r\n'
        assert ask(port, "POST", url + "/xhr_send", rb'["  \u0000\n\r "]').status == 204
        assert link.chunk() == b'data: a["  \\u0000\\n\\r "]\r\n\r\n'
        big = b'"' + b"x" * 4096 + b'"'
        assert ask(port, "POST", url + "/xhr_send", b"[" + big + b"]").status == 204
        assert link.chunk() == b"data: a[" + big + b"]\r\n\r\n"
        assert link.chunk() == b""
    finally:
        link.close()


HTMLFILE = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.callback;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"""


def test_htmlfile(port):
    url = new_session()
    link, status, headers = stream(port, url + "/htmlfile?c=%63allback", "GET")
    try:
        assert status == 200 and content_type(headers) == "text/html;charset=UTF-8"
        assert_not_cached(headers)
        head = link.chunk()
        assert head.strip().decode() == HTMLFILE and len(head) > 1024
        assert link.chunk() == b'<script>\np("o");\n</script>\r\n'
        assert ask(port, "POST", url + "/xhr_send", b'["x"]').status == 204
        assert link.chunk() == b'<script>\np("a[\\"x\\"]");\n</script>\r\n'
        big = "x" * 4096
        assert ask(port, "POST", url + "/xhr_send", f'["{big}"]'.encode()).status == 204
        assert link.chunk() == f'<script>\np("a[\\"{big}\\"]");\n</script>\r\n'.encode()
        assert link.chunk() == b""
    finally:
        link.close()
    for kind in ("htmlfile", "jsonp"):
        missing = ask(port, "GET", f"/echo/a/a/{kind}")
        assert missing.status == 500 and b'"callback" parameter required' in missing.body
        for callback in ("%20", "*", "abc(", "abc%28"):
            bad = ask(port, "GET", f"/echo/a/a/{kind}?c={callback}")
            assert bad.status == 500 and b'invalid "callback" parameter' in bad.body


# jsonp ----------------------------------------------------------------------------------

FORM = {"Content_Type": "application/x-www-form-urlencoded"}


def test_jsonp_polling(port):
    url = new_session()
    answer = ask(port, "GET", url + "/jsonp?c=%63allback")
    assert answer.status == 200 and answer.body == b'/**/callback("o");\r\n'
    assert content_type(answer) == "application/javascript;charset=UTF-8"
    assert_not_cached(answer.headers)
    sent = ask(port, "POST", url + "/jsonp_send", b"d=%5B%22x%22%5D", **FORM)
    assert (sent.status, sent.body) == (200, b"ok")
    assert content_type(sent) == "text/plain;charset=UTF-8"
    assert_not_cached(sent.headers)
    assert ask(port, "GET", url + "/jsonp?c=callback").body == \
        b'/**/callback("a[\\"x\\"]");\r\n'
    broken = ask(port, "POST", url + "/jsonp_send", b"d=%5B%22x", **FORM)
    assert broken.status == 500 and b"Broken JSON encoding." in broken.body
    for body in (b"", b"d=", b"p=p"):
        empty = ask(port, "POST", url + "/jsonp_send", body, **FORM)
        assert empty.status == 500 and b"Payload expected." in empty.body
    assert ask(port, "POST", url + "/jsonp_send", b"d=%5B%5D", **FORM).body == b"ok"
    assert ask(port, "POST", url + "/jsonp_send", b"d=%5B%22abc%22%5D", **FORM).body == b"ok"
    assert ask(port, "POST", url + "/jsonp_send", b'["%61bc"]',
               Content_Type="text/plain").body == b"ok"
    assert ask(port, "GET", url + "/jsonp?c=x").body == \
        b'/**/x("a[\\"abc\\",\\"%61bc\\"]");\r\n'
    closing = new_session("/close")
    assert ask(port, "GET", closing + "/jsonp?c=x").body == b'/**/x("o");\r\n'
    for _ in range(2):
        assert ask(port, "GET", closing + "/jsonp?c=x").body == \
            b'/**/x("c[3000,\\"Go away!\\"]");\r\n'


# JSESSIONID -----------------------------------------------------------------------------

def test_jsessionid_on_every_session_request(port):
    def cookie(answer: Answer | dict[str, str]) -> list[str]:
        headers = answer.headers if isinstance(answer, Answer) else answer
        return [part.strip().lower() if i else part.strip()
                for i, part in enumerate(headers["set-cookie"].split(";"))][:2]

    url = new_session("/cookie_needed_echo")
    assert cookie(ask(port, "POST", url + "/xhr")) == ["JSESSIONID=dummy", "path=/"]
    given = ask(port, "POST", new_session("/cookie_needed_echo") + "/xhr",
                Cookie="JSESSIONID=abcdef")
    assert given.body == b"o\n" and cookie(given) == ["JSESSIONID=abcdef", "path=/"]
    for kind, method in (("xhr_streaming", "POST"), ("eventsource", "GET"),
                         ("htmlfile?c=callback", "GET")):
        link, status, headers = stream(port, new_session("/cookie_needed_echo") + "/" + kind,
                                       method)
        link.close()
        assert status == 200 and cookie(headers) == ["JSESSIONID=dummy", "path=/"]
    url = new_session("/cookie_needed_echo")
    assert cookie(ask(port, "GET", url + "/jsonp?c=callback")) == ["JSESSIONID=dummy",
                                                                   "path=/"]
    sent = ask(port, "POST", url + "/jsonp_send", b"d=%5B%22x%22%5D", **FORM)
    assert sent.body == b"ok" and cookie(sent) == ["JSESSIONID=dummy", "path=/"]
    assert "set-cookie" not in ask(port, "POST", new_session() + "/xhr").headers


# JSON encoding --------------------------------------------------------------------------

def test_the_daemon_escapes_what_browsers_mangle_and_reads_what_they_escape(port):
    mangled = re.compile("[\x00-\x1f\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff]")
    escaped = "".join(f"\\u{i:04x}" for i in range(255, 65536) if mangled.match(chr(i)))
    url = new_session()
    assert ask(port, "POST", url + "/xhr").body == b"o\n"
    raw = json.dumps([json.loads(f'"{escaped}"')], ensure_ascii=False).encode()
    assert ask(port, "POST", url + "/xhr_send", raw).status == 204
    assert ask(port, "POST", url + "/xhr").body.strip()[2:-1].decode() == f'"{escaped}"'
    every = "".join(chr(i) for i in range(65536) if not 0xD800 <= i <= 0xDFFF)
    assert ask(port, "POST", url + "/xhr_send", json.dumps([every]).encode()).status == 204
    assert json.loads(ask(port, "POST", url + "/xhr").body[1:]) == [every]


# closing --------------------------------------------------------------------------------

def test_a_closed_stream_and_the_next_one_get_the_close_frame(port):
    url = new_session("/close")
    first, _, _ = stream(port, url + "/xhr_streaming")
    assert first.chunk() and first.chunk() == b"o\n"
    assert first.chunk() == b'c[3000,"Go away!"]\n'
    second, _, _ = stream(port, url + "/xhr_streaming")
    assert second.chunk() and second.chunk() == b'c[3000,"Go away!"]\n'
    for link in (first, second):
        assert link.chunk() == b"" and link.rest() == b""
        link.close()


def receivers(port: int, kind: str, count: int) -> None:
    """Wait until ``count`` sessions have a ``kind`` request waiting (in /stats)."""
    end = time.monotonic() + DEADLINE
    while json.loads(ask(port, "GET", "/stats").body)["sockjs"][kind] != count:
        assert time.monotonic() < end, f"never {count} {kind} receivers"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["xhr_streaming", "xhr"])
def test_a_receiver_cut_by_the_network_ends_the_session(port, kind):
    url = new_session()
    if kind == "xhr":
        assert ask(port, "POST", url + "/xhr").body == b"o\n"
    first = held_poll(port, f"{url}/{kind}")
    receivers(port, kind, 1)
    if kind == "xhr_streaming":
        first.head()
        assert first.chunk() and first.chunk() == b"o\n"
        second, _, _ = stream(port, f"{url}/{kind}")
        assert second.chunk() and second.chunk() == \
            b'c[2010,"Another connection still open"]\n'
        assert second.chunk() == b""
        second.close()
    else:
        assert ask(port, "POST", f"{url}/xhr").body == \
            b'c[2010,"Another connection still open"]\n'
    first.close()
    receivers(port, kind, 0)
    if kind == "xhr":
        frame = ask(port, "POST", f"{url}/xhr").body
    else:
        third, _, _ = stream(port, f"{url}/{kind}")
        frame = (third.chunk(), third.chunk())[1]
        third.close()
    assert frame == b'c[1002,"Connection interrupted"]\n'


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_a_stream_over_http_1_0_and_1_1(port, version):
    url = new_session("/close")
    link = Connection(port)
    status, _, headers = link.send("POST", url + "/xhr_streaming",
                                   {"Connection": "Keep-Alive"}, version=version)
    assert status == 200 and "content-length" not in headers
    if version == "1.0":
        assert "transfer-encoding" not in headers
        assert link.exactly(2049)[:1] == b"h" and link.exactly(2) == b"o\n"
        assert link.exactly(19) == b'c[3000,"Go away!"]\n' and link.rest() == b""
    else:
        assert headers["transfer-encoding"] == "chunked"
        assert link.chunk()[:1] == b"h" and link.chunk() == b"o\n"
        assert link.chunk() == b'c[3000,"Go away!"]\n' and link.chunk() == b""
    link.close()


def test_one_heartbeat_round_reaches_every_waiting_receiver():
    """In memory, on a Clock: ``h`` every 25 s to each session's waiting request, from
    one timer for all sessions (gone with the last session)."""
    from tests.memory import Connection as Client
    from tests.memory import make_app
    app = make_app(sockjs_prefix="/echo")
    streams = [Client(app).send("POST", f"/echo/0/s{n}/xhr_streaming") for n in range(3)]
    assert all(s.transport.value().endswith(b"2\r\no\n\r\n") for s in streams)
    timers = len(app.clock.getDelayedCalls())
    for client in streams:
        client.transport.clear()
    app.clock.advance(25)
    assert [s.transport.value() for s in streams] == [b"2\r\nh\n\r\n"] * 3
    assert len(app.clock.getDelayedCalls()) == timers  # (one round, not one per session)
    for client in streams:
        client.protocol.connectionLost(None)  # (cut: each session ends with 1002 ...)
    app.clock.advance(5)  # (... and is forgotten 5 s later)
    assert not app.sockjs_sessions and app.sockjs_sessions._round is None


def test_a_batch_is_encoded_once_per_event_not_per_session(monkeypatch):
    """In memory: a batch of three events to 20 sessions makes each event's SockJS bytes
    three times in all (the events of a batch come in turn to each session: a cache of
    the last event alone would make them 60 times)."""
    import json as json_module

    from cyclone_sse.transports import sockjs
    from tests.memory import Connection as Client
    from tests.memory import make_app
    made = []
    monkeypatch.setattr(sockjs.data_json, "make", lambda event: made.append(event) or
                        sockjs._data_json(event))
    app = make_app(sockjs_prefix="/echo", sockjs_channels="general")
    streams = [Client(app).send("POST", f"/echo/0/s{n}/xhr_streaming") for n in range(20)]
    batch = json_module.dumps([{"channel": "general", "data": f"e{n}"} for n in range(3)])
    Client(app).send("POST", "/publish", batch.encode(),
                     {"Content-Type": "application/json"})
    app.clock.advance(0)
    assert all(s.transport.value().count(b'a["e') == 3 for s in streams)
    assert len(made) == 3
