"""Pushpin's publish API on cyclone-sse, driven by the libraries Pushpin's backends use:
gripcontrol / pubcontrol (HTTP, with their JWT and Bearer key) and django_grip; and
the format parsing underneath."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from cyclone_sse.errors import BadRequest
from cyclone_sse.pushpin import (
    CONTINUED,
    body_events,
    item_events,
    tnetstring_loads,
    zmq_item,
)
from tests.daemon import DEADLINE, Daemon, SSEClient

GRIP_KEY = "grip-control-key-of-enough-length"


@pytest.fixture
def daemon(tmp_path):
    daemon = Daemon(tmp_path, f"--grip-key={GRIP_KEY}", "--grip-iss=backend")
    yield daemon
    daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def test_gripcontrol_publishes_every_format_to_sse_poll_and_websocket(daemon):
    from gripcontrol import GripPubControl, HttpStreamFormat, WebSocketMessageFormat
    from pubcontrol import Item
    from websockets.sync.client import connect
    stream = SSEClient(daemon.port, "channels=test")
    while b"stream-open" not in stream.buffer:  # the position before any event
        stream.buffer += stream._recv()
    before = stream.last_id()
    with connect(f"ws://127.0.0.1:{daemon.port}/", open_timeout=DEADLINE) as ws:
        ws.send(json.dumps({"type": "subscribe", "id": 1, "channels": ["test"]}))
        json.loads(ws.recv(timeout=DEADLINE))
        pub = GripPubControl({"control_uri": f"http://127.0.0.1:{daemon.port}",
                              "control_iss": "backend", "key": GRIP_KEY})
        pub.publish_http_stream("test", "event: score\ndata: 1-0\n\n", id="g1",
                                blocking=True)  # SSE text: its events
        pub.publish_http_stream("test", "plain line\n", blocking=True)  # text: the data
        pub.publish_http_response("test", "a response body", blocking=True)
        pub.publish("test", Item([WebSocketMessageFormat("for sockets"),
                                  HttpStreamFormat("event: both\ndata: stream wins\n\n")]),
                    blocking=True)
        pub.publish("test", Item(WebSocketMessageFormat(b"\xe2\x9c\x93 binary")),
                    blocking=True)  # content-bin
        pub.publish_http_stream("test", "event: score\ndata: 1-0\n\n", id="g1",
                                blocking=True)  # the same id again: kept once
        expected = [("score", "1-0"), ("message", "plain line\n"),
                    ("message", "a response body"), ("both", "stream wins"),
                    ("message", "✓ binary")]
        got = stream.events(5)
        assert [(e["event"], e["data"]) for e in got] == expected
        socket_got = [json.loads(ws.recv(timeout=DEADLINE)) for _ in range(5)]
        assert [(m["event"], m["data"]) for m in socket_got] == expected
    status, polled = daemon.request(
        "GET", f"/?channels=test&transport=poll&lastEventId={before}", None,
        {"Accept": "application/json"})
    assert status == 200
    assert [(e["event"], e["data"]) for e in polled["events"]] == expected
    with pytest.raises(ValueError, match="401"):  # a wrong control key
        GripPubControl({"control_uri": f"http://127.0.0.1:{daemon.port}",
                        "control_iss": "backend", "key": "not-" + GRIP_KEY}
                       ).publish_http_stream("test", "x", blocking=True)
    with pytest.raises(ValueError, match="401"):  # the right key, another issuer
        GripPubControl({"control_uri": f"http://127.0.0.1:{daemon.port}",
                        "control_iss": "intruder", "key": GRIP_KEY}).publish_http_stream(
            "test", "x", blocking=True)
    with pytest.raises(ValueError, match="400"):  # not a channel name
        GripPubControl({"control_uri": f"http://127.0.0.1:{daemon.port}",
                        "key": GRIP_KEY}).publish_http_stream("bad channel", "x",
                                                               blocking=True)


def test_django_grip_publishes_with_its_settings(daemon):
    stream = SSEClient(daemon.port, "channels=updates")
    script = (
        "import django\n"
        "from django.conf import settings\n"
        f"settings.configure(GRIP_URL='http://127.0.0.1:{daemon.port}"
        f"?iss=backend&key={GRIP_KEY}')\n"
        "django.setup()\n"
        "from django_grip import publish\n"
        "from gripcontrol import HttpStreamFormat\n"
        "publish('updates', HttpStreamFormat('data: from django\\n\\n'), blocking=True)\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=DEADLINE,
                   capture_output=True)
    assert stream.events(1)[0]["data"] == "from django"


def test_pushpin_items_become_events():
    events = body_events({"items": [
        {"channel": "a", "id": "1", "prev-id": "0",
         "formats": {"http-stream": {"content": "data: x\n\nevent: e\ndata: y\ndata: z\n\n"}}},
        {"channel": "b", "formats": {"http-response": {"code": 200, "body-bin":
                                                       base64.b64encode(b"r").decode()}}},
        {"channel": "c", "formats": {"http-stream": {"action": "close"}}},
    ]})
    assert [(e.channel, e.data, e.name, e.publisher_id) for e in events] == [
        ("a", "x", None, "1:0"), ("a", "y\nz", "e", "1:1"), ("b", "r", None, None),
        ("c", "", None, None)]
    # what a GRIP-held client gets: the content once (with the item's first event), a
    # published http-response's code, a close (published as no event: test_grip.py)
    grips = [e.grip for e in events]
    assert grips[0].content == b"data: x\n\nevent: e\ndata: y\ndata: z\n\n"
    assert (grips[0].id, grips[0].prev_id) == ("1", "0") and grips[1] is CONTINUED
    assert grips[2].response == (200, (), b"r") and grips[3].close
    for bad in ({}, {"items": []}, {"items": [{"formats": {}}]},
                {"items": [{"channel": "a", "formats": {"nope": {}}}]},
                {"items": [{"channel": "a", "formats": {"ws-message": {"content-bin": "!"}}}]}):
        with pytest.raises(BadRequest):
            body_events(bad)
    # ZeroMQ payloads: J + JSON, a TNetString (as pubcontrol sends), or plain data
    import tnetstring  # (tnetstring3: what pubcontrol's ZeroMQ client encodes with)
    tnet = tnetstring.dumps({b"formats": {b"ws-message": {b"content": b"hi"}}})
    assert tnetstring_loads(tnet) == {"formats": {"ws-message": {"content": b"hi"}}}
    assert item_events(zmq_item(tnet), "c")[0].data == "hi"
    assert zmq_item(b'J{"formats": {"ws-message": {"content": "j"}}}') is not None
    assert zmq_item(b"plain data") is None and zmq_item(b"12:not}") is None
