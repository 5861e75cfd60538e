"""The ZeroMQ broker with real pyzmq publishers: the daemon binding or connecting, plain
and Pushpin-formatted messages, two daemons behind an XPUB/XSUB proxy, and a publisher
restart."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.services import free_port


def heard(pub, port):
    """Publish probes until a subscriber of ``probe`` hears one: the PUB/SUB connection
    is then up (ZeroMQ drops what is sent before it is)."""
    probe = SSEClient(port, "channels=probe")
    probe.sock.settimeout(0.1)
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        pub.send_multipart([b"probe", b"p"])
        try:
            probe.buffer += probe._recv()
        except TimeoutError:
            continue
        if b"data: p" in probe.buffer:
            probe.close()
            return
    raise AssertionError("the daemon never heard the publisher")


@pytest.fixture
def context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_publishers_connect_to_a_binding_daemon_plain_and_pushpin(tmp_path, context):
    import tnetstring
    from gripcontrol import HttpStreamFormat
    from pubcontrol import Item
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    daemon = Daemon(tmp_path, "--broker=zmq", f"--zmq-bind={endpoint}")
    try:
        pub = context.socket(zmq.PUB)
        pub.connect(endpoint)
        heard(pub, daemon.port)
        stream = SSEClient(daemon.port, "channels=news")
        pub.send_multipart([b"news", b"plain"])
        pub.send_multipart([b"news", "named ✓".encode(), b"score"])
        item = Item(HttpStreamFormat("event: goal\ndata: 2-1\n\n"), id="p1").export(True, True)
        pub.send_multipart([b"news", tnetstring.dumps(item)])  # as pubcontrol sends it
        pub.send_multipart([b"news", b'J{"formats": {"ws-message": {"content": "json"}}}'])
        pub.send_multipart([b"bad channel", b"x"])  # refused, counted, logged once
        pub.send_multipart([b"news", b"x" * 2_000_000])  # over --max-body: dropped by
        heard(pub, daemon.port)  # libzmq with its connection, which is made again
        pub.send_multipart([b"news", b"last"])
        got = stream.events(5)
        assert [(e["event"], e["data"]) for e in got] == [
            ("message", "plain"), ("score", "named ✓"), ("goal", "2-1"),
            ("message", "json"), ("message", "last")]
        broker = daemon.request("GET", "/stats")[1]["broker"]
        assert broker["name"] == "zmq" and broker["rejected"] == 1
    finally:
        daemon.stop()
    log = "".join(daemon.log)
    assert log.count("ignored ZeroMQ message") == 1 and "Traceback" not in log


def test_a_connecting_daemon_and_a_publisher_restart(tmp_path, context):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = context.socket(zmq.PUB)
    pub.bind(endpoint)
    daemon = Daemon(tmp_path, "--broker=zmq", f"--zmq-connect={endpoint}")
    try:
        heard(pub, daemon.port)
        stream = SSEClient(daemon.port, "channels=a")
        pub.send_multipart([b"a", b"before"])
        assert stream.events(1)[0]["data"] == "before"
        pub.close(linger=0)  # the publisher restarts on the same address
        pub = context.socket(zmq.PUB)
        end = time.monotonic() + DEADLINE
        while True:  # (libzmq releases the old socket's port in its own thread)
            try:
                pub.bind(endpoint)
                break
            except zmq.ZMQError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        heard(pub, daemon.port)  # the daemon reconnected by itself
        pub.send_multipart([b"a", b"after"])
        events = stream.events(2)
        assert [e["data"] for e in events] == ["before", "after"]  # nothing repeated
    finally:
        pub.close(linger=0)
        daemon.stop()


def test_two_daemons_behind_an_xpub_xsub_proxy(tmp_path, context):
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    xsub, xpub = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
    xsub.bind(front)  # publishers (and the daemons' PUB) connect here
    xpub.bind(back)  # the daemons' SUB connect here
    def forward():
        try:
            zmq.proxy(xsub, xpub)
        except zmq.ZMQError:
            pass  # the context was destroyed: the test is over

    proxy = threading.Thread(target=forward, daemon=True)
    proxy.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    daemons = [Daemon(tmp_path / name, "--broker=zmq", f"--zmq-connect={back}",
                      f"--zmq-publish={front}") for name in "ab"]
    pub = context.socket(zmq.PUB)
    pub.connect(front)
    try:
        for daemon in daemons:
            heard(pub, daemon.port)
        streams = [SSEClient(d.port, "channels=room") for d in daemons]
        pub.send_multipart([b"room", b"from a publisher"])
        status, _ = daemons[0].request(
            "POST", "/publish", json.dumps({"channel": "room", "data": "from daemon a"}),
            {"Content-Type": "application/json"})
        assert status == 200
        for stream in streams:
            got = sorted(e["data"] for e in stream.events(2))
            assert got == ["from a publisher", "from daemon a"]
        pub.send_multipart([b"room", b"third"])
        for stream in streams:  # daemon a skipped its own echo: nothing twice
            assert [e["data"] for e in stream.events(3)][2] == "third"
    finally:
        pub.close(linger=0)
        for daemon in daemons:
            daemon.stop()
        context.destroy(linger=0)  # ends the proxy
        proxy.join(DEADLINE)
