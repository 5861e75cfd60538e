"""GRIP proxy mode with a real django-grip backend (tests/grip_backend): plain answers
passed through and signed, held streams (text and SSE) fed by gripcontrol and by
/publish, keep-alives, held responses answered by a publish or at their timeout, and a
backend that is down."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.daemon import DEADLINE, ROOT, Daemon
from tests.services import free_port

KEY = "grip-shared-key-of-enough-length!!"


@pytest.fixture
def site(tmp_path):
    yield from started(tmp_path)


def started(tmp_path, *options):
    """The daemon proxying /api/ to a django-grip backend it signs requests for."""
    port = free_port()
    daemon = Daemon(tmp_path, f"--grip-proxy=/api/=http://127.0.0.1:{port}",
                    f"--grip-key={KEY}", *options)
    backend = subprocess.Popen(
        [sys.executable, "-m", "tests.grip_backend.serve", str(port),
         f"http://127.0.0.1:{daemon.port}", KEY], cwd=ROOT, stdout=subprocess.PIPE,
        text=True)
    try:
        assert backend.stdout.readline().strip() == "serving"
        yield daemon, port
    finally:
        backend.kill()
        backend.wait(DEADLINE)
        backend.stdout.close()
        daemon.stop()
        assert "Traceback" not in "".join(daemon.log)


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def held(port, path):
    """A raw request whose answer is read as it comes: (socket, head)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head.decode(), rest


def read_until(sock, rest, marker):
    while marker not in rest:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {rest!r}"
        rest += chunk
    return rest


def subscribed(daemon, channel):
    """Until the daemon holds a subscriber of ``channel``."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        stats = daemon.request("GET", "/stats")[1]
        if any(name == channel for name, _ in stats["subscriptions"]):
            return
        time.sleep(0.02)
    raise AssertionError(f"nobody subscribed to {channel}")


def publisher(daemon):
    from gripcontrol import GripPubControl
    return GripPubControl({"control_uri": f"http://127.0.0.1:{daemon.port}", "key": KEY})


def test_plain_answers_pass_through_signed(site):
    daemon, backend_port = site
    response, body = get(daemon.port, "/api/plain/?x=1")
    assert response.status == 200 and response.getheader("X-Backend") == "django"
    assert body == b"hello from django; signed=True\n"  # Grip-Sig checked by django-grip
    response, _ = get(backend_port, "/api/stream/")  # not through the proxy: unsigned
    assert response.status == 501


def test_a_held_stream_gets_what_is_published_and_keep_alives(site):
    daemon, _ = site
    sock, head, rest = held(daemon.port, "/api/stream/")
    assert head.startswith("HTTP/1.1 200") and "text/plain" in head
    assert "Grip-" not in head and "Content-Length" not in head
    rest = read_until(sock, rest, b"welcome to the stream\n")
    subscribed(daemon, "stream-test")
    publisher(daemon).publish_http_stream("stream-test", "hello there\n", blocking=True)
    daemon.publish_form("channel=stream-test&message=from+%2Fpublish")
    rest = read_until(sock, rest, b"from /publish")  # the data as it is, no framing
    assert rest.endswith(b"welcome to the stream\nhello there\nfrom /publish")
    sock.close()
    sock, head, rest = held(daemon.port, "/api/stream/?ka=1")  # Grip-Keep-Alive, 1 s
    read_until(sock, rest, b"ka\n")
    sock.close()


def test_a_held_event_stream_gets_the_published_content_and_other_events_as_frames(site):
    daemon, _ = site
    sock, head, rest = held(daemon.port, "/api/sse/")
    assert "text/event-stream" in head
    subscribed(daemon, "sse-test")
    # a Pushpin item's content is written as the backend published it (as Pushpin
    # does: its ids are the backend's, none added)
    publisher(daemon).publish_http_stream("sse-test", "event: score\nid: s:7\ndata: 2-1\n\n",
                                          blocking=True)
    rest = read_until(sock, rest, b"data: 2-1\n\n")
    assert rest.endswith(b"event: score\nid: s:7\ndata: 2-1\n\n")
    # an event from another publish path is an SSE frame with the daemon's id
    daemon.publish_form("channel=sse-test&message=3-1")
    rest = read_until(sock, rest, b"data: 3-1\n\n")
    assert re.search(rb"\nid: [^\n]+\ndata: 3-1\n\n$", rest)
    sock.close()


def test_a_held_response_is_answered_by_a_publish_or_its_timeout(site):
    daemon, _ = site
    answers = {}
    waiting = threading.Thread(target=lambda: answers.update(
        first=get(daemon.port, "/api/poll/")))
    waiting.start()
    subscribed(daemon, "poll-test")
    publisher(daemon).publish_http_response("poll-test", "the answer\n", blocking=True)
    waiting.join(DEADLINE)
    response, body = answers["first"]
    assert response.status == 200 and body == b"the answer\n"
    started = time.monotonic()
    response, body = get(daemon.port, "/api/poll/?timeout=1")
    assert body == b"nothing yet\n" and time.monotonic() - started >= 0.9  # its own answer


def test_a_backend_answer_past_the_limit_gives_a_clear_502(tmp_path):
    for daemon, _ in started(tmp_path, "--grip-max-answer=100000"):
        response, body = get(daemon.port, "/api/big/")
        assert response.status == 502 and "--grip-max-answer" in json.loads(body)["error"]
        response, body = get(daemon.port, "/api/plain/")  # and the next one is fine
        assert response.status == 200


def test_a_backend_that_is_down_gives_a_clear_502(tmp_path):
    daemon = Daemon(tmp_path, f"--grip-proxy=/api/=http://127.0.0.1:{free_port()}")
    try:
        response, body = get(daemon.port, "/api/anything")
        assert response.status == 502
        answer = json.loads(body)
        assert answer["status"] == 502 and "did not answer" in answer["error"]
    finally:
        daemon.stop()
    log = "".join(daemon.log)
    assert "Traceback" not in log and log.count("did not answer") == 1


# the held stream's item path, in memory ---------------------------------------------------

def held_streams(*metas):
    """GRIP-held streams of the channel ``test`` (one per ``meta``), live, writing to
    StringTransports, as django-eventstream holds them (build-id, prev-id)."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from cyclone_sse.grip import Hold
    from cyclone_sse.registry import Counters
    from cyclone_sse.transports.grip import GripStreamSubscriber
    streams = []
    for meta in metas:
        hold = Hold("stream", ["test"], 55, None, 0, None, {"test": "0"},
                    {"test": frozenset({"build-id", "skip-self"})},
                    {"id_format": "test:%(test)s", **meta}, "/events/?link=1")
        stream = GripStreamSubscriber(StringTransport(), Counters(), 1 << 20, b"", True,
                                      Clock(), hold, lambda channel: None)
        stream.socket = None  # (no direct socket: written through the transport)
        stream.live = True
        streams.append(stream)
    return streams


def test_held_streams_alike_share_an_items_bytes_and_the_others_get_their_own():
    """Holds alike (one channel, the same filters and meta) get an item's bytes built
    once; a hold whose meta differs (its ``user`` is the item's sender: skip-self)
    gets its own answer even right after them; a skipped item still moves its last id,
    so the next item's prev-id is no gap."""
    from cyclone_sse.event import Event, EventId
    from cyclone_sse.pushpin import GripItem
    alice, bob1, bob2 = held_streams({"user": "alice"}, {"user": "bob"}, {"user": "bob"})

    def item(n, sender):
        event = Event("test", "x", EventId("e", n))
        event.grip = GripItem(b"id: %I\ndata: " + str(n).encode() + b"\n\n", False, str(n),
                              str(n - 1), frozenset({"build-id", "skip-self"}),
                              (("sender", sender),))
        return event

    for n, sender in ((1, "alice"), (2, "carol")):
        event = item(n, sender)
        for stream in (bob1, alice, bob2):
            stream.deliver([event], b"")
    assert bob1.transport.value() == bob2.transport.value() == (
        b"id: test:1\ndata: 1\n\nid: test:2\ndata: 2\n\n")
    assert alice.transport.value() == b"id: test:2\ndata: 2\n\n"  # (1 was hers)
    assert alice.last_ids == {"test": "2"} and not alice.recovering
