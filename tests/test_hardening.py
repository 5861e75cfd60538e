"""Hostile and sloppy HTTP clients: strict parsing, one request at a time, per-phase
timeouts — in memory with a Clock, then against the real daemon."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.memory import Connection, make_app


def answer(conn):
    """(status, JSON body) of the one response written so far."""
    status, _, body = conn.head_and_body()
    return status, json.loads(body)


# strict parsing -----------------------------------------------------------------------

@pytest.mark.parametrize("raw,status,reason", [
    (b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
     b"Content-Length: 5\r\n\r\nhello", 400, "whitespace before a header's colon"),
    (b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\nhello", 400, "ambiguous framing"),
    (b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
     "Transfer-Encoding is not supported"),
    (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
     400, "one non-negative whole number"),
    ("POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\n".encode(),
     400, "one non-negative whole number"),  # (a digit to str.isdigit, not to int)
    (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
     400, "one non-negative whole number"),
    (b"GET /stats HTTP/1.1\r\n\r\n", 400, "exactly one Host"),
    (b"GET /stats HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP version not supported"),
    (b"GET /stats HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400, "line folding"),
    (b"GET /stats HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, "malformed header"),
])
def test_ambiguous_or_malformed_requests_are_refused(raw, status, reason):
    app = make_app()
    conn = Connection(app)
    conn.protocol.dataReceived(raw)
    got, body = answer(conn)
    assert (got, body["status"]) == (status, status) and reason in body["error"]
    assert conn.transport.disconnecting


def test_http_1_0_needs_no_host_and_blank_lines_before_a_request_are_ignored():
    conn = Connection(make_app())
    conn.protocol.dataReceived(b"\r\n\r\nGET /stats HTTP/1.0\r\n\r\n")
    assert answer(conn)[0] == 200


@pytest.mark.parametrize("version,connection,kept", [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Keep-Alive", True),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "Keep-Alive", True), ("HTTP/1.0", "close", False),
])
@pytest.mark.parametrize("path", ["/publish", "/stats"])  # the lean path and cyclone's
def test_keep_alive_follows_the_version_and_the_connection_header(version, connection,
                                                                  kept, path):
    conn = Connection(make_app())
    body = b"channel=a&message=hi" if path == "/publish" else b""
    head = f"{'POST' if body else 'GET'} {path} {version}\r\nHost: x\r\n"
    if connection:
        head += f"Connection: {connection}\r\n"
    if body:
        head += "Content-Type: application/x-www-form-urlencoded\r\n" \
                f"Content-Length: {len(body)}\r\n"
    conn.protocol.dataReceived(head.encode() + b"\r\n" + body)
    assert answer(conn)[0] == 200
    assert conn.transport.disconnecting is not kept


# one request at a time ------------------------------------------------------------------

def test_a_request_pipelined_behind_a_subscribe_is_refused_by_closing():
    app = make_app()
    conn = Connection(app)
    conn.protocol.dataReceived(b"GET /?channels=a HTTP/1.1\r\nHost: x\r\n\r\n"
                               b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.transport.disconnecting
    assert conn.raw.count(b"HTTP/1.1") <= 1 and b'"uptime"' not in conn.raw
    assert app.registry.counters.refused_pipelined == 1
    later = Connection(app).send("GET", "/?channels=a")
    later.protocol.dataReceived(b"\r\n")  # a blank line on a stream is harmless
    assert not later.transport.disconnecting
    later.protocol.dataReceived(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert later.transport.disconnecting and b'"uptime"' not in later.raw


def test_pipelined_requests_are_answered_one_at_a_time_in_order():
    app = make_app(poll_timeout=10)
    conn = Connection(app)
    conn.protocol.dataReceived(
        b"GET /?channels=a&transport=poll HTTP/1.1\r\nHost: x\r\n\r\n"  # held
        b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.raw == b""  # the poll is not answered yet, so neither is /stats
    app.clock.advance(10)
    answers = conn.raw.split(b"HTTP/1.1 200 OK")
    assert len(answers) == 3 and b'"events"' in answers[1] and b'"uptime"' in answers[2]


def test_answers_to_requests_pipelined_in_one_read_go_out_in_one_write_in_order():
    app = make_app()
    stream = Connection(app).send("GET", "/?channels=a")
    conn = Connection(app)
    writes = []
    write = conn.transport.write
    conn.transport.write = lambda data: (writes.append(data), write(data))  # type: ignore
    publish = (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
               b"x-www-form-urlencoded\r\nContent-Length: 19\r\n\r\nchannel=a&message=%d")
    conn.protocol.dataReceived(b"".join(publish % n for n in range(3)) +
                               b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert writes == []  # (after the fan-out at the end of the turn: test_publish.py)
    app.clock.advance(0)
    assert len(writes) == 1
    answers = conn.raw.split(b"HTTP/1.1 200 OK")[1:]
    assert len(answers) == 4 and b'"uptime"' in answers[3]
    ids = [json.loads(a.partition(b"\r\n\r\n")[2])["events"][0]["id"] for a in answers[:3]]
    app.clock.advance(0)
    assert [(e["id"], e["data"]) for e in stream.events()] == list(zip(ids, "012", strict=True))
    # a request that is not whole yet waits; the answers before it are not held back
    writes.clear()
    conn.protocol.dataReceived(publish % 3 + b"GET /st")
    app.clock.advance(0)
    assert len(writes) == 1 and conn.raw.count(b"HTTP/1.1 200 OK") == 5
    conn.protocol.dataReceived(b"ats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.raw.count(b"HTTP/1.1 200 OK") == 6
    # an answer that closes the connection goes out with those before it, and ends it
    closing = Connection(app)
    closing.protocol.dataReceived(publish % 4 + b"GET /stats HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n" + publish % 5)
    app.clock.advance(0)
    assert closing.raw.count(b"HTTP/1.1 200 OK") == 2 and b'"uptime"' in closing.raw
    assert closing.transport.disconnecting


def test_a_head_is_the_same_request_however_it_is_cut_into_reads():
    request = (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
               b"x-www-form-urlencoded\r\nContent-Length: 19\r\n\r\nchannel=a&message=1")
    whole = Connection(make_app())
    whole.protocol.dataReceived(request)
    trickled = Connection(make_app())
    for n in range(len(request)):  # one byte per read, CRLFs split included
        trickled.protocol.dataReceived(request[n:n + 1])
    assert whole.json()[0] == trickled.json()[0] == 200
    assert trickled.json()[1]["events"][0]["channel"] == "a"


@pytest.mark.parametrize("reads,reason", [
    ([b"GET / HTTP/1.1\r\nX: " + b"a" * 16400], "longer than 16384 bytes"),  # unfinished
    ([b"GET / HTTP/1.1\r\nX: " + b"a" * 10000, b"a" * 6400], "longer than 16384 bytes"),
    ([b"GET /" + b"a" * 16400 + b" HTTP/1.1\r\n\r\n"], "longer than 16384 bytes"),
    ([b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101], "too many header lines"),  # unfinished
    ([b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 60, b"X: 1\r\n" * 60 + b"\r\n"],
     "too many header lines"),
])
def test_overlong_lines_and_too_many_lines_are_refused_as_they_arrive(reads, reason):
    conn = Connection(make_app())
    for data in reads:
        conn.protocol.dataReceived(data)
    status, body = answer(conn)
    assert status == 431 and reason in body["error"] and conn.transport.disconnecting


def test_hundreds_of_requests_pipelined_in_one_read_are_all_answered_in_order():
    app = make_app()
    conn = Connection(app)
    conn.protocol.dataReceived(b"".join(
        b"GET /healthz?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(1500)))
    app.clock.advance(0)
    assert conn.raw.count(b"HTTP/1.1 200 OK") == 1500 and not conn.transport.disconnecting


def test_a_body_sent_after_100_continue_is_taken():
    app = make_app()
    conn = Connection(app)
    conn.protocol.dataReceived(
        b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: "
        b"application/x-www-form-urlencoded\r\nContent-Length: 19\r\n\r\n")
    assert conn.raw == b"HTTP/1.1 100 (Continue)\r\n\r\n"
    conn.protocol.dataReceived(b"channel=a&message=1")
    app.clock.advance(0)
    head, _, body = conn.raw.partition(b"\r\n\r\n")[2].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body)["events"]


# timeouts -----------------------------------------------------------------------------

def test_slow_request_headers_are_cut_off_whatever_trickles_in():
    app = make_app(header_timeout=10)
    conn = Connection(app)
    conn.protocol.dataReceived(b"GET /?channels=a HTTP/1.1\r\n")
    for _ in range(4):  # slowloris: one more header line every 2 s
        app.clock.advance(2)
        conn.protocol.dataReceived(b"X-Slow: 1\r\n")
    app.clock.advance(2)
    status, body = answer(conn)
    assert status == 408 and "request headers not received within 10 s" in body["error"]
    assert conn.transport.disconnecting
    assert app.stats()["request_timeouts"] == 1


def test_a_connection_that_never_speaks_is_closed_quietly():
    app = make_app(header_timeout=10)
    conn = Connection(app)
    app.clock.advance(10)
    assert conn.transport.disconnecting and conn.raw == b""
    assert app.stats()["request_timeouts"] == 0


def test_slow_bodies_and_idle_keep_alives_are_closed():
    app = make_app(body_timeout=5, idle_timeout=20)
    slow = Connection(app)
    slow.protocol.dataReceived(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
                               b"Content-Type: application/json\r\n\r\n{\"chan")
    app.clock.advance(5)
    assert answer(slow)[0] == 408 and "request body not received" in answer(slow)[1]["error"]
    idle = Connection(app).send("GET", "/stats")
    assert answer(idle)[0] == 200 and not idle.transport.disconnecting
    app.clock.advance(19)
    assert not idle.transport.disconnecting
    app.clock.advance(1)
    assert idle.transport.disconnecting


def test_streams_and_held_polls_are_not_timed_out():
    app = make_app(header_timeout=1, body_timeout=1, idle_timeout=1, poll_timeout=30)
    stream = Connection(app).send("GET", "/?channels=a")
    poll = Connection(app).send("GET", "/?channels=a&transport=poll")
    app.clock.advance(29)
    assert not stream.transport.disconnecting and poll.raw == b""
    app.clock.advance(1)
    assert answer(poll)[0] == 200 and not stream.transport.disconnecting


def test_a_stream_leaves_no_timer_behind_in_the_reactor():
    # thousands of streams, each with a dead timer, would make every callLater dearer
    app = make_app(header_timeout=5, idle_timeout=5)
    before = len(app.clock.getDelayedCalls())
    streams = [Connection(app).send("GET", f"/?channels=s{i}") for i in range(20)]
    sockets = [Connection(app).send("GET", "/", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) for _ in range(5)]
    assert all(b" 200 OK" in s.raw.split(b"\r\n")[0] for s in streams)
    assert all(b" 101 " in s.raw.split(b"\r\n")[0] for s in sockets)
    kept = [c for c in app.clock.getDelayedCalls()
            if getattr(c.func, "__name__", "") == "_timed_out"]
    assert kept == [], len(app.clock.getDelayedCalls()) - before


# against the real daemon ---------------------------------------------------------------

def test_slowloris_is_cut_off_while_a_subscriber_keeps_receiving(tmp_path):
    daemon = Daemon(tmp_path, "--header-timeout=1")
    try:
        healthy = SSEClient(daemon.port, "channels=news")
        slow = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
            sock.sendall(b"GET /?channels=news HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        started = time.monotonic()
        for sock in slow:  # one more header line now and then, never the blank line
            sock.sendall(b"X-Slow: 1\r\n")
        closed = 0
        for sock in slow:
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except ConnectionResetError:
                pass
            closed += b" 408 " in data.split(b"\r\n")[0]
            sock.close()
        assert closed == 20 and time.monotonic() - started < DEADLINE / 2
        daemon.publish_form("channel=news&message=still+here")
        assert healthy.events(1)[0]["data"] == "still here"
        healthy.close()
        raw = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 505 ")
        raw.close()
    finally:
        daemon.stop()
    log = "".join(daemon.log)
    assert log.count("too slow to send a request") == 1  # one line, not twenty
    assert "Traceback" not in log


def test_a_request_pipelined_behind_a_real_stream_never_enters_it(tmp_path):
    daemon = Daemon(tmp_path)
    try:
        sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
        sock.sendall(b"GET /?channels=a HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 21\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
                     b"channel=a&message=sly")
        data = b""
        while chunk := sock.recv(4096):  # the daemon closes the connection
            data += chunk
        sock.close()
        assert data.count(b"HTTP/1.1 ") <= 1 and b"sly" not in data
        stats = daemon.request("GET", "/stats")[1]
        assert stats["events_published"] == 0 and stats["refused_pipelined"] == 1
    finally:
        daemon.stop()


# publish bodies --------------------------------------------------------------------------

def post(app, body: bytes, content_type="application/json", headers=None, path="/publish"):
    conn = Connection(app).send("POST", path, body, {"Content-Type": content_type,
                                                      **(headers or {})})
    return answer(conn)


def test_nesting_is_measured_through_objects_and_arrays_alike():
    from cyclone_sse.checks import deeper_than as _deeper_than
    value: object = "leaf"
    for level in range(32):
        value = {"k": [1, "x", None], "v": value} if level % 2 else [0, value, "y"]
    assert not _deeper_than(value, 32) and _deeper_than([value], 32)
    assert _deeper_than({"a": 1, "b": [{}], "c": value}, 32)
    assert not _deeper_than("text", 0) and not _deeper_than(7, 0)


def test_deep_json_is_a_400_without_a_traceback():
    from twisted.logger import globalLogPublisher
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        app = make_app()
        for depth in (33, 100_000):
            status, body = post(app, b'{"channel":"a","data":' + b"[" * depth +
                                b"]" * depth + b"}")
            assert status == 400 and "nested deeper than 32" in body["error"]
        ok = b'{"channel":"a","data":' + b"[" * 31 + b"]" * 31 + b"}"
        assert post(app, ok)[0] == 200
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert not [e for e in seen if e.get("log_failure") is not None]


def test_percent_escaped_invalid_utf8_is_refused_like_raw_invalid_utf8():
    app = make_app()
    status, body = post(app, b"channel=a&message=%ff%fe",
                        "application/x-www-form-urlencoded")
    assert status == 400 and "UTF-8" in body["error"]
    assert post(app, b"channel=a&message=%C3%A9t%C3%A9",
                "application/x-www-form-urlencoded")[0] == 200


def test_credentials_are_checked_before_the_body_and_never_taken_from_the_url():
    app = make_app(http_secret="k")
    # a wrong key in the header: 401, though the body is not even JSON
    status, body = post(app, b"{not json", headers={"Authorization": "Bearer nope"})
    assert status == 401
    status, body = post(app, b"channel=a&message=x", "application/x-www-form-urlencoded",
                        path="/publish?key=k")
    assert status == 400 and body["field"] == "key" and "not in the URL" in body["error"]
    assert post(app, b"channel=a&message=x&key=k", "application/x-www-form-urlencoded")[0] \
        == 200


# operating ---------------------------------------------------------------------------

def test_health_and_readiness():
    from twisted.internet.task import Clock

    from cyclone_sse.app import App
    from cyclone_sse.brokers import HttpBroker

    app = make_app()
    status, headers, body = Connection(app).send("GET", "/healthz").head_and_body()
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    assert headers["x-content-type-options"] == "nosniff"
    assert answer(Connection(app).send("GET", "/readyz")) == (200, {"status": "ready"})
    app.stop()
    status, body = answer(Connection(app).send("GET", "/readyz"))
    assert status == 503 and body["reasons"] == ["not started, or stopping"]

    class Down(HttpBroker):
        connected = False

    class CutOff(App):
        def build_broker(self):
            return Down(self.registry, self.history, self.settings_obj, self.clock)

    cut = CutOff({"internal_port": 9999}, reactor=Clock())
    cut.start()
    for site in (cut, cut.internal_site()):  # probes reach either listener
        status, body = answer(Connection(site).send("GET", "/readyz"))
        assert status == 503 and body["reasons"] == ["broker http unreachable"]


def test_the_version_can_be_hidden():
    shown = Connection(make_app()).send("GET", "/healthz").head_and_body()[1]
    hidden = Connection(make_app(hide_version=True)).send("GET", "/healthz").head_and_body()[1]
    assert shown["server"].startswith("cyclone-sse/") and hidden["server"] == "cyclone-sse"


# connection limits ---------------------------------------------------------------------

def test_past_the_connection_limit_requests_get_503_but_operations_still_answer():
    app = make_app(max_connections=3)
    streams = [Connection(app).send("GET", "/?channels=a") for _ in range(3)]
    over = Connection(app).send("GET", "/?channels=a")
    status, headers, body = over.head_and_body()
    assert status == 503 and headers["retry-after"] == "5"
    assert "connection limit" in json.loads(body)["error"]
    stats = Connection(app).send("GET", "/stats")
    assert answer(stats)[0] == 200  # from the reserve
    ready = Connection(app).send("GET", "/readyz")
    status, body = answer(ready)
    assert status == 503 and "at the connection limit" in body["reasons"]
    app.connection_limits.reserve = 0  # the reserve used up: refused at once
    at_once = Connection(app)
    assert at_once.head_and_body()[0] == 503 and at_once.transport.disconnecting
    for conn in (over, at_once, stats, ready, *streams[:2]):
        conn.close()
    assert answer(Connection(app).send("GET", "/readyz"))[0] == 200
    assert Connection(app).send("GET", "/?channels=a").head_and_body()[0] == 200
    assert app.stats()["refused_connections"] == 2


def test_one_address_may_be_limited():
    app = make_app(max_per_address=2)
    first = [Connection(app).send("GET", "/?channels=a") for _ in range(2)]
    third = Connection(app).send("GET", "/?channels=a")
    status, body = answer(third)
    assert status == 503 and "your address" in body["error"]
    third.close()  # (the daemon closed it; in memory the test plays the kernel)
    first[0].close()
    assert Connection(app).send("GET", "/?channels=a").head_and_body()[0] == 200


def test_at_the_open_file_limit_the_daemon_answers_503_and_stats_still_work(tmp_path):
    daemon = Daemon(tmp_path, open_files=256)  # --max-connections: 256 - 64 = 192
    clients, refused = [], 0
    try:
        for _ in range(200):
            client = SSEClient(daemon.port, "channels=a")
            if client.status == 200:
                clients.append(client)
            else:
                assert client.status == 503 and client.headers["retry-after"] == "5"
                refused += 1
                client.close()
        assert len(clients) >= 180 and refused == 200 - len(clients) and refused > 0
        status, stats = daemon.request("GET", "/stats")
        assert status == 200 and stats["max_connections"] == 192
        assert daemon.request("GET", "/healthz")[0] == 200
        assert daemon.publish_form("channel=a&message=still+served")[0] == 200  # reserve
        assert clients[0].events(1)[0]["data"] == "still served"
    finally:
        for client in clients:
            client.close()
        daemon.stop()
    log = "".join(daemon.log)
    assert log.count("answering 503 to new connections") == 1 and "Traceback" not in log


# memory ------------------------------------------------------------------------------

def test_one_publish_may_name_only_so_many_channels():
    app = make_app(max_publish_channels=3)
    status, body = post(app, json.dumps({"channels": ["a", "b", "c", "d"],
                                         "data": "x"}).encode())
    assert status == 400 and "too many channels in one publish: 4 > 3" in body["error"]
    assert post(app, json.dumps({"channels": ["a", "b", "c"], "data": "x"}).encode())[0] \
        == 200


def test_large_publishes_keep_the_daemon_within_its_history_budget(tmp_path):
    from pathlib import Path
    budget = 16 * 1024 * 1024
    daemon = Daemon(tmp_path, f"--history-bytes={budget}", "--max-body=600000")

    def rss() -> int:
        pages = int(Path(f"/proc/{daemon.proc.pid}/statm").read_text().split()[1])
        return pages * 4096

    try:
        healthy = SSEClient(daemon.port, "channels=small")
        before = rss()
        payload = "y" * 500_000
        for n in range(200):  # 100 MB published, on eight channels
            status, _ = daemon.request("POST", "/publish", json.dumps(
                {"channel": f"big{n % 8}", "data": payload}),
                {"Content-Type": "application/json"})
            assert status == 200
        daemon.publish_form("channel=small&message=still+here")
        assert healthy.events(1)[0]["data"] == "still here"
        held = daemon.request("GET", "/stats")[1]["history"]["bytes"]
        grown = rss() - before
        print(f"\n100 MB of 500 kB events published: history holds {held / 2**20:.1f} MiB "
              f"(budget 16 MiB), daemon RSS grew {grown / 2**20:.1f} MiB")
        assert held <= budget
        assert grown < budget + 48 * 1024 * 1024
        healthy.close()
    finally:
        daemon.stop()


def test_per_channel_metrics_are_bounded_to_the_busiest():
    from cyclone_sse.export.graphite import metric_lines
    app = make_app(metrics_channels=2)
    subscribers = [Connection(app).send("GET", f"/?channels=c{n}")
                   for n in (1, 2, 2, 3, 3, 3, 4)]
    metrics = Connection(app).send("GET", "/metrics").head_and_body()[2].decode()
    labelled = sorted(line for line in metrics.splitlines()
                      if line.startswith("cyclone_sse_channel_subscribers{"))
    assert labelled == ['cyclone_sse_channel_subscribers{channel="c2"} 2.0',
                        'cyclone_sse_channel_subscribers{channel="c3"} 3.0']
    lines = metric_lines("sse", app.stats(), 0, 2)
    assert sorted(line for line in lines if ".channels." in line) == [
        "sse.channels.c2 2 0", "sse.channels.c3 3 0"]
    assert len(subscribers) == 7


def test_the_fan_out_latency_is_a_prometheus_histogram():
    app = make_app()
    Connection(app).send("GET", "/?channels=a")
    Connection(app).send("POST", "/publish", b"channel=a&message=x",
                         {"Content-Type": "application/x-www-form-urlencoded"})
    app.clock.advance(0.003)  # the fan-out at the end of the turn, 3 ms later here
    app.clock.advance(0)
    Connection(app).send("POST", "/publish", b"channel=nobody&message=x",
                         {"Content-Type": "application/x-www-form-urlencoded"})
    app.clock.advance(0)  # no subscriber, no write: not observed
    metrics = Connection(app).send("GET", "/metrics").head_and_body()[2].decode()
    assert 'cyclone_sse_fanout_seconds_bucket{le="0.0025"} 0.0' in metrics
    assert 'cyclone_sse_fanout_seconds_bucket{le="0.005"} 1.0' in metrics
    assert 'cyclone_sse_fanout_seconds_count 1.0' in metrics


def test_pattern_replays_are_rate_limited_daemon_wide():
    app = make_app(pattern_replays=1)  # one a second, two at once
    replay = {"Last-Event-Id": "x-0"}
    assert [Connection(app).send("GET", "/?channels=a.*", headers=replay).head_and_body()[0]
            for _ in range(2)] == [200, 200]
    status, headers, body = Connection(app).send("GET", "/?channels=a.*",
                                                 headers=replay).head_and_body()
    assert status == 429 and headers["retry-after"] == "1"
    assert "too many pattern replays" in json.loads(body)["error"]
    # names, and patterns without a position, are not what is limited
    assert Connection(app).send("GET", "/?channels=a", headers=replay).head_and_body()[0] == 200
    assert Connection(app).send("GET", "/?channels=a.*").head_and_body()[0] == 200
    app.clock.advance(1)
    assert Connection(app).send("GET", "/?channels=a.*", headers=replay).head_and_body()[0] == 200
    assert app.stats()["refused_pattern_replays"] == 1


# every bad input at once, against the real daemon ----------------------------------------

def _post(content_type: bytes, body: bytes) -> bytes:
    return (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type +
            b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


FORM, JSON = b"application/x-www-form-urlencoded", b"application/json"
BAD_INPUTS = [
    # (what, raw request bytes, expected status)
    ("space before a header colon", b"POST /publish HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("Transfer-Encoding and Content-Length", b"POST /publish HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("chunked body", b"POST /publish HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    ("two Content-Lengths", b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
    ("HTTP/1.1 without Host", b"GET /stats HTTP/1.1\r\n\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("garbage request line", b"HELLO\r\n\r\n", 400),
    ("oversized body", b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n",
     413),
    ("overlong header", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("deep JSON", _post(JSON, b'{"channel":"a","data":' + b"[" * 100000 + b"]" * 100000
                        + b"}"), 400),
    ("%ff in a form", _post(FORM, b"channel=a&message=%ff%fe"), 400),
    ("raw invalid UTF-8", _post(JSON, b"\xff\xfe"), 400),
    ("not a JSON object", _post(JSON, b"[1, 2]"), 400),
    ("missing message", _post(FORM, b"channel=a"), 400),
    ("reserved event name", _post(FORM, b"channel=a&message=x&event=history-gap"), 400),
    ("CR in an event name", _post(FORM, b"channel=a&message=x&event=a%0Db"), 400),
    ("bad channel name", b"GET /?channels=a%20b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("too many channels", b"GET /?channels=" + b",".join(b"c%d" % n for n in range(65))
     + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("unknown URL", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
]


def test_every_bad_input_gets_its_status_while_a_subscriber_keeps_receiving(tmp_path):
    daemon = Daemon(tmp_path)
    healthy = SSEClient(daemon.port, "channels=a")
    answers = []
    try:
        for n, (what, raw, expected) in enumerate(BAD_INPUTS):
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE) as s:
                s.sendall(raw)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            status = int(data.split(b" ", 2)[1]) if data else 0
            answers.append((what, status))
            assert status == expected, (what, data[:300])
            assert b"Content-Type: application/json" in data, what
            daemon.publish_form(f"channel=a&message=still+here+{n}")
            assert healthy.events(n + 1)[-1]["data"] == f"still here {n}", what
        assert len(answers) == len(BAD_INPUTS)
    finally:
        healthy.close()
        daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def test_a_second_stop_signal_is_ignored_quietly(tmp_path):
    import signal
    daemon = Daemon(tmp_path)
    stream = SSEClient(daemon.port, "channels=a")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_for("closing 1 open connections")  # stopping: now the impatient ones
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.send_signal(signal.SIGINT)
    assert stream.wait_closed() is not None
    assert daemon.stop(signalled=True) == -signal.SIGTERM  # twistd exits by the first
    log = "".join(daemon.log)
    assert "Server Shut Down" in log
    assert "Traceback" not in log and "ReactorNotRunning" not in log
    assert log.count("Received SIG") == 1


@pytest.mark.parametrize("query", [
    "channels=a&channels=b", "a=1&&b=2&", "a&b=", "=x&a==1", "a=%41&b=c+d", "a=\u00e9&b=1",
    "channels=a;b", "a=%zz", ""])
def test_the_lean_query_parse_is_the_one_cyclone_makes(query):
    from urllib.parse import parse_qs

    from cyclone_sse.http.parse import parse_query
    assert parse_query(query) == parse_qs(query, keep_blank_values=True)


def test_lean_arguments_are_cyclone_arguments():
    import cyclone.web

    from cyclone_sse.handlers.base import arguments_of
    app = make_app()
    connection = Connection(app).protocol
    from cyclone.httpserver import HTTPRequest
    request = HTTPRequest("GET", "/?a=%20x%01y%20&a=plain&b=&c=%C3%A9", connection=connection)
    handler = cyclone.web.RequestHandler(app, request)
    for name in ("a", "b", "c", "missing"):
        assert arguments_of(request, name) == handler.get_arguments(name), name
