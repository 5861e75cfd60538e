"""The AMQP broker against a real RabbitMQ, with real daemons."""

import json
import subprocess
import sys

from tests.daemon import DEADLINE, ROOT, Daemon, SSEClient
from tests.services import AMQP, TcpCut, amqp_exchange, amqp_publish  # noqa: F401


def amqp_daemon(tmp_path, exchange, *options, port=AMQP[1], kind="direct"):
    daemon = Daemon(tmp_path, "--broker=amqp", f"--amqp-exchange-name={exchange}",
                    f"--amqp-exchange-type={kind}", f"--amqp-port={port}", "--heartbeat=30",
                    *options)
    daemon.wait_for("amqp connection .* is up")
    return daemon


def two_daemons(tmp_path, exchange):
    """Two daemons on one exchange, each in a folder of its own."""
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        daemons.append(amqp_daemon(tmp_path / name, exchange))
    return daemons


def test_a_message_on_the_exchange_reaches_the_channel_subscribers(
        tmp_path, amqp_exchange):  # noqa: F811
    daemon = amqp_daemon(tmp_path, amqp_exchange)
    try:
        base, other = SSEClient(daemon.port, "channels=base"), SSEClient(daemon.port, "channels=x")
        amqp_publish(amqp_exchange, "base", "[1, 2, 3] ✓", event="update")
        amqp_publish(amqp_exchange, "base", b"\xff broken")        # ignored, logged once
        amqp_publish(amqp_exchange, "x", "for x")
        amqp_publish(amqp_exchange, "base", "second")
        assert [(e["event"], e["data"]) for e in base.events(2)] == [
            ("update", "[1, 2, 3] ✓"), ("message", "second")]
        assert other.events(1)[0]["data"] == "for x"
        stats = daemon.request("GET", "/stats")[1]["broker"]
        assert stats["connected"] is True and stats["rejected"] == 1
    finally:
        daemon.stop()


def test_http_publish_goes_through_the_exchange_to_every_daemon(
        tmp_path, amqp_exchange):  # noqa: F811
    a, b = two_daemons(tmp_path, amqp_exchange)
    try:
        on_a, on_b = SSEClient(a.port, "channels=base"), SSEClient(b.port, "channels=base")
        status, answer = a.publish_form("message=hello&channel=base&id=once")
        assert status == 200 and answer["subscribers"] == 1
        a.publish_form("message=hello&channel=base&id=once")  # a retry: not again
        a.publish_form("message=next&channel=base")
        assert [e["data"] for e in on_a.events(2)] == ["hello", "next"]
        assert [e["data"] for e in on_b.events(2)] == ["hello", "next"]
    finally:
        a.stop()
        b.stop()


def test_patterns_with_a_topic_exchange(tmp_path, amqp_exchange):  # noqa: F811
    daemon = amqp_daemon(tmp_path, amqp_exchange, kind="topic")
    try:
        client = SSEClient(daemon.port, "channels=news.*")
        for key, data in (("news.sport", "goal"), ("weather", "rain"), ("news.tech", "chip")):
            amqp_publish(amqp_exchange, key, data)
        assert [e["data"] for e in client.events(2)] == ["goal", "chip"]
    finally:
        daemon.stop()


def test_cut_off_from_rabbitmq_streams_stay_and_nothing_is_lost(
        tmp_path, amqp_exchange):  # noqa: F811
    cut = TcpCut(AMQP)
    daemon = amqp_daemon(tmp_path, amqp_exchange, port=cut.port)
    try:
        client = SSEClient(daemon.port, "channels=a")
        amqp_publish(amqp_exchange, "a", "before")
        assert client.events(1)[0]["data"] == "before"
        cut.cut()
        daemon.wait_for("amqp connection .* connection lost.*; reconnecting")
        status, answer = daemon.publish_form("message=x&channel=a")
        assert status == 503 and "unreachable" in answer["error"]
        assert daemon.request("GET", "/stats")[1]["broker"]["connected"] is False
        amqp_publish(amqp_exchange, "a", "during the cut")  # kept in the daemon's queue
        cut.restore()
        daemon.wait_for("amqp connection .* is back")
        assert [e["data"] for e in client.events(2)] == ["before", "during the cut"]
        assert daemon.publish_form("message=after&channel=a")[0] == 200
        assert client.events(3)[-1]["data"] == "after"
    finally:
        daemon.stop()
        cut.cut()


def test_amqps_with_a_private_ca_and_a_client_certificate(tmp_path):
    """A RabbitMQ of the test's own speaking only TLS and requiring client certificates:
    daemons that trust its CA and present a certificate carry events between them; one
    that does not trust it, and one without a certificate, each log one line saying
    why, answer 503, and never a traceback."""
    from tests.services import PrivateRabbitMQ, private_ca
    private_ca(tmp_path)
    rabbit = PrivateRabbitMQ(tmp_path)
    url = f"--amqp-url=amqps://guest:guest@localhost:{rabbit.port}/%2F"
    trust = f"--amqp-ca-file={tmp_path / 'ca.crt'}"
    identity = (f"--amqp-cert-file={tmp_path / 'client.crt'}",
                f"--amqp-key-file={tmp_path / 'client.key'}")
    daemons = {}
    try:
        for name, options in (("a", (trust, *identity)), ("b", (trust, *identity)),
                              ("untrusting", identity), ("anonymous", (trust,))):
            (tmp_path / name).mkdir()
            daemons[name] = Daemon(tmp_path / name, "--broker=amqp", url,
                                   "--amqp-exchange-type=fanout", *options)
        a, b = daemons["a"], daemons["b"]
        for daemon in (a, b):
            daemon.wait_for(rf"amqp connection to amqps://localhost:{rabbit.port}/ is up")
        on_b = SSEClient(b.port, "channels=a")
        assert a.publish_form("channel=a&message=over+tls")[0] == 200
        assert on_b.events(1)[0]["data"] == "over tls"  # a -> RabbitMQ (TLS) -> b
        subprocess.run([sys.executable, "extras/publisher.py", "amqp", "a", "from the cli",
                        "--url", url.partition("=")[2], "--ca-file", str(tmp_path / "ca.crt"),
                        "--cert-file", str(tmp_path / "client.crt"),
                        "--key-file", str(tmp_path / "client.key")],
                       cwd=ROOT, check=True, timeout=DEADLINE, capture_output=True)
        assert on_b.events(2)[1]["data"] == "from the cli"
        on_b.close()
        daemons["untrusting"].wait_for("amqp connection .*certificate verify "
                                       "failed")
        daemons["anonymous"].wait_for("amqp connection .*certificate required")
        for name in ("untrusting", "anonymous"):
            assert daemons[name].publish_form("channel=a&message=x")[0] == 503
            assert daemons[name].request("GET", "/readyz")[0] == 503
    finally:
        for daemon in daemons.values():
            daemon.stop()
        rabbit.stop()
    for name in ("untrusting", "anonymous"):
        log = "".join(daemons[name].log)
        assert log.count("amqp connection") == 1 and "Traceback" not in log, log


def kombu_connection():
    import kombu
    return kombu.Connection(f"amqp://guest:guest@{AMQP[0]}:{AMQP[1]}//")


def test_messages_from_celerys_kombu_with_rich_headers_are_delivered(
        tmp_path, amqp_exchange):  # noqa: F811
    """kombu (py-amqp), as Celery publishes: headers of every kind (None, lists, nested
    tables, booleans, 64-bit numbers, timestamps) and a non-ASCII event name."""
    import datetime

    import kombu
    daemon = amqp_daemon(tmp_path, amqp_exchange)
    try:
        client = SSEClient(daemon.port, "channels=jobs")
        headers = {"task": "app.notify", "shadow": None, "timelimit": [None, 30],
                   "retries": 2**40, "ignore_result": True, "origin": {"host": "w1"},
                   "eta": datetime.datetime(2026, 12, 3, 12, 0)}
        with kombu_connection() as connection:
            producer = connection.Producer()
            exchange = kombu.Exchange(amqp_exchange, type="direct", durable=True)
            for body, name in (("{\"done\": 1}", "t\u00e2che"), ("second", None)):
                producer.publish(body, exchange=exchange, routing_key="jobs",
                                 headers=headers, content_type="application/json",
                                 content_encoding="utf-8", serializer=None,
                                 **({"type": name} if name else {}))
        assert [(e["event"], e["data"]) for e in client.events(2)] == [
            ("t\u00e2che", "{\"done\": 1}"), ("message", "second")]
        assert daemon.request("GET", "/stats")[1]["broker"]["rejected"] == 0
    finally:
        daemon.stop()


def test_non_ascii_names_travel_and_what_amqp_cannot_carry_is_refused(
        tmp_path, amqp_exchange):  # noqa: F811
    a, b = two_daemons(tmp_path, amqp_exchange)
    try:
        on_a, on_b = SSEClient(a.port, "channels=c"), SSEClient(b.port, "channels=c")
        status, answer = a.request("POST", "/publish", json.dumps(
            {"channel": "c", "message": "x", "event": "\u00e9" * 128}),
            {"Content-Type": "application/json"})
        assert (status, answer) == (400, {
            "error": "the event name longer than 255 bytes cannot travel through AMQP",
            "status": 400, "field": "event"})
        status, _ = a.request("POST", "/publish", json.dumps(
            {"channel": "c", "message": "d\u00e9j\u00e0", "event": "\u00e9t\u00e9",
             "id": "\u20ac-1"}), {"Content-Type": "application/json"})
        assert status == 200
        for client in (on_a, on_b):
            [event] = client.events(1)  # (the refused one reached no one)
            assert (event["event"], event["data"]) == ("\u00e9t\u00e9", "d\u00e9j\u00e0")
    finally:
        a.stop()
        b.stop()


def test_a_channel_the_server_closes_is_set_up_anew(tmp_path, amqp_exchange):  # noqa: F811
    """The exchange deleted under a running daemon: RabbitMQ closes its channel at the
    next publish; the one after is refused (503) while the daemon reconnects and
    declares everything again, and publishing works once it is back."""
    daemon = amqp_daemon(tmp_path, amqp_exchange)
    try:
        client = SSEClient(daemon.port, "channels=c")
        with kombu_connection() as connection:
            connection.default_channel.exchange_delete(amqp_exchange)
        assert daemon.publish_form("message=lost+upstream&channel=c")[0] == 200
        daemon.wait_for("amqp connection .*the server closed channel 1: NOT_FOUND")
        daemon.wait_for("amqp connection .* is back")
        assert daemon.publish_form("message=again&channel=c")[0] == 200
        amqp_publish(amqp_exchange, "c", "from outside")
        assert [e["data"] for e in client.events(3)] == [
            "lost upstream", "again", "from outside"]
    finally:
        daemon.stop()
