"""The WebSocket transport over real sockets: the Python ``websockets`` client for the
protocol, raw frames for what a well-behaved client never sends."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.daemon import DEADLINE, Daemon, SSEClient


@pytest.fixture
def daemon(tmp_path):
    daemon = Daemon(tmp_path)
    yield daemon
    daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def ws(daemon, **kw):
    return connect(f"ws://127.0.0.1:{daemon.port}/", open_timeout=DEADLINE, **kw)


def ask(conn, message):
    conn.send(json.dumps(message))
    return json.loads(conn.recv(timeout=DEADLINE))


def receive(conn, count):
    return [json.loads(conn.recv(timeout=DEADLINE)) for _ in range(count)]


def test_subscribe_and_receive_beside_an_event_stream(daemon):
    with ws(daemon) as conn:
        assert ask(conn, {"type": "ping", "id": 7}) == {"type": "pong", "id": 7}
        subscribed = ask(conn, {"type": "subscribe", "id": 1, "channels": ["a", "news.*"]})
        assert subscribed["type"] == "subscribed" and subscribed["id"] == 1
        assert subscribed["channels"] == ["a", "news.*"] and subscribed["lastEventId"]
        stream = SSEClient(daemon.port, "channels=a")  # the same port, the same channel
        assert daemon.request("GET", "/stats")[1]["connections"] == 2
        daemon.publish_form("channel=a&message=line+1%0D%0Aline+2")
        daemon.request("POST", "/publish", json.dumps(
            {"channel": "news.eu", "message": "goal", "event": "score"}),
            {"Content-Type": "application/json"})
        first, second = receive(conn, 2)
        assert first == {"type": "event", "channel": "a", "id": first["id"],
                         "event": "message", "data": "line 1\nline 2"}
        assert (second["channel"], second["event"], second["data"]) == ("news.eu", "score",
                                                                        "goal")
        assert stream.events(1)[0] == {"id": first["id"], "event": "message",
                                       "data": "line 1\nline 2"}  # the same payload
        # a channel twice on one connection would deliver its events twice: refused
        assert ask(conn, {"type": "subscribe", "id": 2, "channels": ["b", "a"]})["code"] == 409
        assert ask(conn, {"type": "dance", "id": 3})["code"] == 400
        assert ask(conn, {"type": "subscribe", "id": 4, "channels": 7})["code"] == 400


def test_resume_after_a_lost_connection_replays_exactly_what_was_missed(daemon):
    with ws(daemon) as conn:
        ask(conn, {"type": "subscribe", "id": 1, "channels": ["a", "b"]})
        daemon.publish_form("channel=a&message=seen")
        last = receive(conn, 1)[0]["id"]
    for n in range(3):
        daemon.publish_form(f"channel={'ab'[n % 2]}&message=missed+{n}")
    with ws(daemon) as conn:
        subscribed = ask(conn, {"type": "subscribe", "id": 1, "channels": ["a", "b"],
                                "lastEventId": last})
        replayed = receive(conn, 3)
        assert [e["data"] for e in replayed] == ["missed 0", "missed 1", "missed 2"]
        assert subscribed["lastEventId"] == last  # a replay follows: each event moves it
        daemon.publish_form("channel=a&message=live")
        assert receive(conn, 1)[0]["data"] == "live"  # once: not replayed, not doubled
    with ws(daemon) as conn:
        ask(conn, {"type": "subscribe", "id": 1, "channels": ["a"], "lastEventId": "bogus-9"})
        gap = json.loads(conn.recv(timeout=DEADLINE))
        assert gap == {"type": "gap", "reason": "unknown", "lastEventId": "bogus-9"}
    # every closed WebSocket gave its connection back (only this request is open)
    stats = daemon.request("GET", "/stats")[1]
    assert stats["open_connections"] == 1 and stats["connections"] == 0


def test_policies_and_tokens_apply_as_for_event_streams(tmp_path):
    import jwt
    daemon = Daemon(tmp_path, "--policies=secret.*=token", "--jwt-secret=" + "k" * 32)
    with ws(daemon) as conn:
        refused = ask(conn, {"type": "subscribe", "id": 1, "channels": ["secret.x"]})
        assert refused["type"] == "error" and refused["code"] == 401
    exp = int(time.time()) + 600
    token = jwt.encode({"sub": "ann", "channels": ["secret.x"], "exp": exp}, "k" * 32)
    with ws(daemon) as conn:
        answer = ask(conn, {"type": "subscribe", "id": 1, "channels": ["secret.x"],
                            "token": token})
        assert answer["type"] == "subscribed", answer
    url = f"ws://127.0.0.1:{daemon.port}/?token={token}"  # or in the URL, as for streams
    with connect(url, open_timeout=DEADLINE) as conn:
        answer = ask(conn, {"type": "subscribe", "id": 1, "channels": ["secret.x"]})
        assert answer["type"] == "subscribed", answer
    with ws(daemon) as conn:
        other = jwt.encode({"sub": "bob", "channels": ["secret.y"], "exp": exp}, "k" * 32)
        refused = ask(conn, {"type": "subscribe", "id": 1, "channels": ["secret.x"],
                             "token": other})
        assert refused["code"] == 403
    daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def test_a_foreign_origin_is_refused_when_origins_are_listed(tmp_path):
    daemon = Daemon(tmp_path, "--cors-origin=https://app.example")
    try:
        with pytest.raises(InvalidStatus) as refused:
            ws(daemon, origin="https://evil.example")
        assert refused.value.response.status_code == 403
        with ws(daemon, origin="https://app.example") as conn:
            assert ask(conn, {"type": "ping", "id": 1})["type"] == "pong"
    finally:
        daemon.stop()


def raw_socket(port):
    """A WebSocket connection made by hand, for frames no library would send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame(opcode, payload, masked=True):
    head = bytes([0x80 | opcode])
    length = len(payload)
    flag = 0x80 if masked else 0
    if length < 126:
        head += bytes([flag | length])
    elif length < 65536:
        head += bytes([flag | 126]) + struct.pack("!H", length)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(sock):
    """The code of the close frame the daemon sends (None if it just dropped us)."""
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) >= 4 and data[0] & 0x0F == 8:
                return struct.unpack("!H", data[2:4])[0]
    except OSError:
        pass
    return None


def fragment(opcode, payload, fin):
    """A masked frame with FIN set or not (a fragment of a longer message)."""
    whole = frame(opcode, payload)
    return bytes([whole[0] & 0x7F | (0x80 if fin else 0)]) + whole[1:]


@pytest.mark.parametrize("bad,code", [
    (frame(1, b"x" * 70000), 1009),                    # larger than a client may send
    (fragment(1, b"x" * 40000, False) + fragment(0, b"x" * 40000, True), 1009),  # in parts
    (frame(1, b"\xff\xfe not utf-8"), 1007),            # invalid UTF-8 in a text message
    (frame(1, b'{"type": "ping"}', masked=False), 1002),  # clients must mask
    (frame(5, b"?"), 1002),                             # an opcode that does not exist
    (frame(9, b"p" * 126), 1002),                       # a control frame over 125 bytes
    (fragment(9, b"p", False), 1002),                   # a fragmented control frame
    (frame(2, b'{"type": "ping"}'), 1003),              # binary: the protocol is text
    (frame(1, b"{garbage"), 1008),                      # not JSON
    (frame(1, b"[1, 2]"), 1008),                        # JSON, not an object
])
def test_bad_frames_are_closed_with_the_code_that_says_why(daemon, bad, code):
    with ws(daemon) as healthy:
        ask(healthy, {"type": "subscribe", "id": 1, "channels": ["a"]})
        sock = raw_socket(daemon.port)
        sock.sendall(bad)
        assert close_code(sock) == code
        sock.close()
        daemon.publish_form("channel=a&message=still+here")
        assert receive(healthy, 1)[0]["data"] == "still here"


def test_the_daemon_stopping_closes_with_going_away(tmp_path):
    daemon = Daemon(tmp_path)
    with ws(daemon) as conn:
        ask(conn, {"type": "subscribe", "id": 1, "channels": ["a"]})
        daemon.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:  # read while the daemon stops
            conn.recv(timeout=DEADLINE)
        code = closed.value.rcvd.code if closed.value.rcvd is not None else None
    assert daemon.stop(signalled=True) == -signal.SIGTERM
    log = "".join(daemon.log)
    assert "closing 1 open connections" in log and "Traceback" not in log
    assert code == 1001, (repr(closed.value), log)  # going away


def test_an_event_is_framed_once_for_every_subscriber():
    from cyclone_sse.event import Event, EventId, joined
    from cyclone_sse.transports.websocket import event_frame
    event = Event("a", "x" * 200, EventId("e", 1))
    frame = event_frame(event)
    assert event_frame(event) is frame  # the same bytes object for every subscriber
    assert frame[0] == 0x81 and frame[1] == 126  # FIN + text, unmasked, 16-bit length
    assert struct.unpack("!H", frame[2:4])[0] == len(frame) - 4
    assert json.loads(frame[4:]) == {"type": "event", "channel": "a", "id": "e-1",
                                     "event": "message", "data": "x" * 200}
    small, big = Event("a", "y", EventId("e", 2)), Event("a", "z" * 70000, EventId("e", 3))
    assert event_frame(small)[1] == len(event_frame(small)) - 2  # 7-bit length
    assert event_frame(big)[1] == 127 and \
        struct.unpack("!Q", event_frame(big)[2:10])[0] == len(event_frame(big)) - 10
    batch = [small, big]
    assert joined(batch, event_frame) is joined(batch, event_frame)  # once per fan-out
    assert joined(batch, event_frame) == event_frame(small) + event_frame(big)


def test_an_apps_authorize_hook_guards_websocket_subscriptions_too(tmp_path):
    from extras.custom_app import token_for
    daemon = Daemon(tmp_path, "--app=extras.custom_app.App", "--http-secret=s3cret")
    try:
        with ws(daemon) as conn:
            refused = ask(conn, {"type": "subscribe", "id": 1, "channels": ["private:x"]})
            assert refused["type"] == "error" and refused["code"] == 403
        url = f"ws://127.0.0.1:{daemon.port}/?token={token_for('s3cret', 'private:x')}"
        with connect(url, open_timeout=DEADLINE) as conn:
            answer = ask(conn, {"type": "subscribe", "id": 1,
                                "channels": ["private:*", "public"]})
            assert answer["type"] == "subscribed", answer
            for channel in ("private:y", "private:x"):  # the pattern reaches only x
                daemon.publish_form(f"channel={channel}&message={channel}&key=s3cret")
            assert [e["channel"] for e in receive(conn, 1)] == ["private:x"]
    finally:
        daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def test_fragments_pings_and_a_client_close_are_answered(daemon):
    sock = raw_socket(daemon.port)
    sock.sendall(fragment(1, b'{"type": "pi', False) + frame(9, b"hello")
                 + fragment(0, b'ng", "id": 3}', True))
    data = b""
    while b'"pong"' not in data or not data.startswith(b"\x8a"):
        data += sock.recv(65536)
    assert data.startswith(b"\x8a\x05hello")  # its ping answered first, in between
    assert json.loads(data[7 + 2:]) == {"type": "pong", "id": 3}
    sock.sendall(frame(8, struct.pack("!H", 1000) + b"bye"))
    assert close_code(sock) == 1000  # the close answered with its code, then EOF
    sock.close()


@pytest.mark.parametrize("headers,status", [
    ("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: " + "QUJDREVGR0hJSktMTU5PUA==", 426),
    ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short", 400),
    ("Sec-WebSocket-Version: 13", 400),
])
def test_a_bad_handshake_gets_a_clear_http_error(daemon, headers, status):
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
    sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\n{headers}\r\n\r\n").encode())
    answer = b""
    while b"}" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert json.loads(body)["status"] == status
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in head
    sock.close()


def test_the_keep_alive_round_pings_and_drops_a_silent_peer():
    import base64 as b64

    from tests.memory import Connection, make_app
    app = make_app(ws_ping=20)
    alive, silent = Connection(app), Connection(app)
    for conn in (alive, silent):
        conn.send("GET", "/", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Version": "13",
                                       "Sec-WebSocket-Key": b64.b64encode(os.urandom(16))
                                       .decode()})
        assert conn.raw.startswith(b"HTTP/1.1 101")
        conn.transport.clear()
    app.clock.advance(20)
    assert alive.raw == silent.raw == b"\x89\x00"  # both pinged
    alive.protocol.dataReceived(frame(10, b""))  # a pong
    app.clock.advance(20)
    assert alive.raw == b"\x89\x00" * 2 and not alive.transport.disconnecting
    closing = silent.raw[2:]  # after its one ping: a close frame, 1011, and the close
    assert closing[0] == 0x88 and closing[2:4] == struct.pack("!H", 1011)
    assert silent.transport.disconnecting
    assert app.websockets.dead_peers == 1


@pytest.mark.parametrize("own_handler", [False, True])
def test_an_upgraded_connection_keeps_no_request_handler(own_handler):
    """What a WebSocket connection holds is its protocol: the request that upgraded it
    and cyclone's handler are let go (they held ~2.4 KB a connection).  On the stock
    route the upgrade takes the lean path and builds no handler at all; an --app's own
    ``SubscribeHandler`` subclass is cyclone's, and is let go too."""
    import gc
    import weakref

    from cyclone_sse.handlers.subscribe import SubscribeHandler
    from tests.memory import Connection, app_with_own_handlers, instances_of, make_app

    app = make_app()
    if own_handler:
        app = app_with_own_handlers(app.clock)
    with instances_of(SubscribeHandler) as built:
        conn = Connection(app).send("GET", "/", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
    assert conn.raw.startswith(b"HTTP/1.1 101")
    assert len(built) == own_handler
    handlers = [weakref.ref(h) for h in built]
    del built
    conn.transport.clear()
    conn.protocol.dataReceived(frame(1, json.dumps(
        {"type": "subscribe", "id": 1, "channels": ["a"]}).encode()))
    assert json.loads(conn.raw[2:])["type"] == "subscribed"
    gc.collect()
    assert [h() for h in handlers] == [None] * len(handlers)
    assert conn.protocol.request is None and conn.protocol.upgraded is not None


def test_an_apps_get_channels_hook_applies_to_websocket_subscriptions(tmp_path):
    """extras/custom_app.py adds "announcements" to every subscription through
    ``get_channels``: over WebSocket too, once per connection."""
    daemon = Daemon(tmp_path, "--app=extras.custom_app.App", "--http-secret=s3cret")
    try:
        with ws(daemon) as conn:
            first = ask(conn, {"type": "subscribe", "id": 1, "channels": ["news"]})
            assert first["type"] == "subscribed", first
            assert first["channels"] == ["news", "announcements"]
            second = ask(conn, {"type": "subscribe", "id": 2, "channels": ["sport"]})
            assert second["type"] == "subscribed" and second["channels"] == ["sport"]
            twice = ask(conn, {"type": "subscribe", "id": 3, "channels": ["news"]})
            assert twice["type"] == "error" and twice["code"] == 409
            daemon.publish_form("channel=announcements&message=maintenance&key=s3cret")
            event = receive(conn, 1)[0]
            assert (event["channel"], event["data"]) == ("announcements", "maintenance")
    finally:
        daemon.stop()
    assert "Traceback" not in "".join(daemon.log)
