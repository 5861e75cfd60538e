"""The AMQP broker against a real RabbitMQ, with real daemons."""

from tests.daemon import Daemon, SSEClient
from tests.services import AMQP, TcpCut, amqp_exchange, amqp_publish  # noqa: F401


def amqp_daemon(tmp_path, exchange, *options, port=AMQP[1], kind="direct"):
    daemon = Daemon(tmp_path, "--broker=amqp", f"--amqp-exchange-name={exchange}",
                    f"--amqp-exchange-type={kind}", f"--amqp-port={port}", "--heartbeat=30",
                    *options)
    daemon.wait_for("amqp connection .* is up")
    return daemon


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
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = amqp_daemon(tmp_path / "a", amqp_exchange)
    b = amqp_daemon(tmp_path / "b", amqp_exchange)
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
