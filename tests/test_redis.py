"""The Redis broker and history against a real Redis, with real daemons."""

import json
import secrets

import pytest

from extras.publisher import RedisPublisher
from tests.daemon import Daemon, SSEClient
from tests.services import REDIS, PrivateRedis, TcpCut, free_port, redis_prefix  # noqa: F401


def redis_daemon(tmp_path, prefix, *options, port=6379):
    daemon = Daemon(tmp_path, "--broker=redis", f"--redis-prefix={prefix}",
                    f"--redis-port={port}", "--heartbeat=30", *options)
    daemon.wait_for(r"redis (history|pubsub) connection .* is up", 2)
    return daemon


@pytest.fixture
def two_daemons(tmp_path, redis_prefix):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = redis_daemon(tmp_path / "a", redis_prefix)
    b = redis_daemon(tmp_path / "b", redis_prefix)
    yield a, b
    a.stop()
    b.stop()


def test_publish_on_one_daemon_reaches_subscribers_on_another(two_daemons):
    a, b = two_daemons
    on_a, on_b = SSEClient(a.port, "channels=base"), SSEClient(b.port, "channels=base")
    status, answer = a.publish_form("message=%5B1%2C2%5D&channel=base")
    assert status == 200 and answer["events"][0]["id"]
    assert on_a.events(1)[0]["data"] == on_b.events(1)[0]["data"] == "[1,2]"
    assert on_a.events(1)[0]["id"] == on_b.events(1)[0]["id"] == answer["events"][0]["id"]


def test_redis_cli_publish_reaches_every_daemon(tmp_path, redis_prefix):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = redis_daemon(tmp_path / "a", redis_prefix)
    try:
        a.wait_for("now stores raw redis messages")  # alone, so elected
        b = redis_daemon(tmp_path / "b", redis_prefix)
        try:
            on_a, on_b = SSEClient(a.port, "channels=base"), SSEClient(b.port, "channels=base")
            redis = RedisPublisher(*REDIS)
            assert redis.publish_raw("base", "[1, 2, 3]") >= 1
            redis.publish_raw("base", b"\xff not utf-8")  # ignored, logged once
            redis.publish_raw("bad channel!", "x")        # ignored
            redis.publish_raw("base", "[4]")
            redis.close()
            events_a, events_b = on_a.events(2), on_b.events(2)
            assert [e["data"] for e in events_a] == [e["data"] for e in events_b] == [
                "[1, 2, 3]", "[4]"]
            assert [e["id"] for e in events_a] == [e["id"] for e in events_b]  # stored once
            assert b.request("GET", "/stats")[1]["broker"]["raw_leader"] is False
        finally:
            b.stop()
    finally:
        a.stop()


def test_raw_messages_larger_than_max_body_are_ignored(tmp_path, redis_prefix):  # noqa: F811
    daemon = redis_daemon(tmp_path, redis_prefix, "--max-body=1000")
    try:
        daemon.wait_for("now stores raw redis messages")
        client = SSEClient(daemon.port, "channels=base")
        redis = RedisPublisher(*REDIS)
        redis.publish_raw("base", "z" * 2000)  # ignored, like an oversized POST
        redis.publish_raw("base", "[5]")
        redis.close()
        assert [e["data"] for e in client.events(1)] == ["[5]"]
        client.close()
    finally:
        daemon.stop()
    assert "".join(daemon.log).count("larger than --max-body (1000 bytes)") == 1


def test_deployments_with_other_prefixes_do_not_echo_each_other(tmp_path):
    from tests.services import delete_prefix
    prefixes = ["echoA-" + secrets.token_hex(3), "echoB-" + secrets.token_hex(3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = redis_daemon(tmp_path / "a", prefixes[0])
    b = redis_daemon(tmp_path / "b", prefixes[1])
    try:
        a.wait_for("now stores raw redis messages")
        b.wait_for("now stores raw redis messages")  # both listen to every raw channel
        on_a = SSEClient(a.port, "channels=x")
        assert a.publish_form("channel=x&message=only+on+A")[0] == 200
        assert on_a.events(1)[0]["data"] == "only on A"
        redis = RedisPublisher(*REDIS)
        redis.publish_raw("marker", "raw, for both")  # a real raw message, after it
        on_b = SSEClient(b.port, "channels=marker", {"Last-Event-Id": "x-0"})
        assert [e["data"] for e in on_b.events(2)][-1] == "raw, for both"
        keys = redis.command("KEYS", prefixes[1] + ":ch:*") or []
        assert [k.decode() for k in keys] == [prefixes[1] + ":ch:marker"]
        assert not redis.command("KEYS", prefixes[0] + ":ch:" + prefixes[1] + "*")
        redis.close()
        assert b.request("GET", "/stats")[1]["broker"]["foreign_skipped"] >= 1
    finally:
        a.stop()
        b.stop()
        for prefix in prefixes:
            delete_prefix(prefix)


def test_raw_standby_keeps_what_was_never_acknowledged_within_its_bounds():
    from twisted.internet.task import Clock

    from cyclone_sse.brokers.redis import RawStandby, raw_key
    clock = Clock()
    standby = RawStandby(clock, max_age=15, max_bytes=1000)
    heard = [("a", "1"), ("a", "1"), ("b", "2"), ("a", "1")]
    for channel, data in heard:
        standby.heard(raw_key(channel.encode(), data.encode()), channel, data)
    standby.acknowledged(raw_key(b"a", b"1"))   # the first "a 1": stored by the leader
    standby.acknowledged(raw_key(b"zz", b"?"))  # something never heard here: no effect
    assert standby.waiting == 3
    assert standby.take_unacknowledged() == [("a", "1"), ("b", "2"), ("a", "1")]
    assert standby.waiting == 0 and standby.bytes == 0 and standby.dropped == 0
    # bounded in age and in bytes: what falls out unacknowledged is counted
    standby.heard(raw_key(b"old", b"x"), "old", "x")
    clock.advance(16)
    standby.heard(raw_key(b"new", b"y"), "new", "y")
    assert standby.dropped == 1 and standby.take_unacknowledged() == [("new", "y")]
    for n in range(20):
        standby.heard(str(n), "c", "z" * 99)
    assert standby.bytes <= 1000 and standby.dropped == 1 + 10 and standby.waiting == 10


def leader_and_standby(tmp_path, prefix):
    """Two daemons on one prefix: ``a`` leads raw ingestion, ``b`` stands by."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = redis_daemon(tmp_path / "a", prefix)
    a.wait_for("now stores raw redis messages")
    return a, redis_daemon(tmp_path / "b", prefix)


def raw_handover(tmp_path, prefix, kill):
    """A leader and a standby; the leader goes (``kill``: SIGKILL, else SIGTERM) while
    raw messages keep coming: the standby stores every one, once, in order."""
    a, b = leader_and_standby(tmp_path, prefix)
    redis = RedisPublisher(*REDIS)
    try:
        on_b = SSEClient(b.port, "channels=raw")
        redis.publish_raw("raw", "before")
        assert on_b.events(1)[0]["data"] == "before"  # stored by A
        assert b.request("GET", "/stats")[1]["broker"]["raw_standby"] == 0  # acknowledged
        if kill:
            a.proc.kill()
        else:
            a.proc.send_signal(15)
        for n in range(5):  # no daemon stores these for now
            redis.publish_raw("raw", f"during {n}")
        took_over = b.wait_for(r"now stores raw redis messages .*\((\d) heard before that")
        # killed, the leader stored none of them; stopping, it may have stored a few
        recovered = int(took_over[0].group(1))
        assert recovered == 5 if kill else 0 <= recovered <= 5
        redis.publish_raw("raw", "after")
        events = on_b.events(7)[1:]
        assert [e["data"] for e in events] == [f"during {n}" for n in range(5)] + ["after"]
        ids = [int(e["id"].rsplit("-", 1)[1]) for e in events]
        assert ids == sorted(set(ids))
        broker = b.request("GET", "/stats")[1]["broker"]
        assert broker["raw_leader"] and broker["raw_recovered"] == recovered
        assert broker["raw_standby"] == 0 and broker["raw_dropped"] == 0
    finally:
        redis.close()
        b.stop()
        a.stop(signalled=True)


def test_raw_messages_survive_the_raw_leaders_death(tmp_path, redis_prefix):  # noqa: F811
    raw_handover(tmp_path, redis_prefix, kill=True)


def test_a_stopping_raw_leader_hands_over_at_once(tmp_path, redis_prefix):  # noqa: F811
    raw_handover(tmp_path, redis_prefix, kill=False)


def test_patterns_subscribe_upstream(two_daemons):
    a, b = two_daemons
    client = SSEClient(b.port, "channels=news.*")
    a.publish_form("message=goal&channel=news.sport")
    a.publish_form("message=rain&channel=weather")
    a.publish_form("message=chip&channel=news.tech")
    assert [e["data"] for e in client.events(2)] == ["goal", "chip"]


def test_reconnecting_to_another_daemon_and_after_restarts_loses_and_doubles_nothing(
        tmp_path, redis_prefix):  # noqa: F811
    a = redis_daemon(tmp_path, redis_prefix)
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = redis_daemon(b_dir, redis_prefix)
    try:
        first = SSEClient(a.port, "channels=x,y")
        a.publish_form("message=1&channel=x")
        seen = first.events(1)[-1]["id"]
        first.close()
        for n, channel in enumerate("yxyx", start=2):
            b.publish_form(f"message={n}&channel={channel}")
        moved = SSEClient(b.port, "channels=x,y", {"Last-Event-Id": seen})
        a.publish_form("message=6&channel=y")
        events = moved.events(5)
        assert [e["data"] for e in events] == ["2", "3", "4", "5", "6"]
        assert len({e["id"] for e in events}) == 5
        resume = events[-1]["id"]
        moved.close()
    finally:
        a.stop()
        b.stop()
    # every daemon restarted: the ids are still valid
    c_dir = tmp_path / "c"
    c_dir.mkdir()
    c = redis_daemon(c_dir, redis_prefix)
    try:
        RedisPublisher(*REDIS, prefix=redis_prefix).send_event("x", "7")
        again = SSEClient(c.port, "channels=x,y", {"Last-Event-Id": seen})
        assert [e["data"] for e in again.events(6)] == ["2", "3", "4", "5", "6", "7"]
        assert [e["event"] for e in again.events(6)] == ["message"] * 6
        tail = SSEClient(c.port, "channels=x,y", {"Last-Event-Id": resume})
        assert [e["data"] for e in tail.events(1)] == ["7"]
    finally:
        c.stop()


def test_ten_thousand_events_arrive_complete_and_in_order(tmp_path, redis_prefix):  # noqa: F811
    daemon = redis_daemon(tmp_path, redis_prefix, "--history-size=20000")
    try:
        clients = [SSEClient(daemon.port, "channels=load") for _ in range(3)]
        redis = RedisPublisher(*REDIS, prefix=redis_prefix, history_size=20000)
        ids = []
        for start in range(0, 10000, 1000):
            ids += redis.send_many([("load", str(n)) for n in range(start, start + 1000)])
        redis.close()
        for client in clients:
            events = client.events(10000)
            assert [e["data"] for e in events] == [str(n) for n in range(10000)]
            assert [e["id"] for e in events] == ids
    finally:
        daemon.stop()


def test_a_daemon_cut_off_from_redis_keeps_streams_and_catches_up(tmp_path, redis_prefix):  # noqa: F811
    cut = TcpCut(REDIS)
    daemon = redis_daemon(tmp_path, redis_prefix, port=cut.port)
    try:
        client = SSEClient(daemon.port, "channels=a")
        daemon.publish_form("message=before&channel=a")
        assert client.events(1)[0]["data"] == "before"
        cut.cut()
        daemon.wait_for(r"connection lost.*; reconnecting", 2)
        status, answer = daemon.publish_form("message=x&channel=a")
        assert status == 503 and "unreachable" in answer["error"]
        stats = daemon.request("GET", "/stats")[1]
        assert stats["broker"]["connected"] is False and stats["connections"] == 1
        # meanwhile another publisher still reaches Redis
        RedisPublisher(*REDIS, prefix=redis_prefix).send_event("a", "during the cut")
        cut.restore()
        daemon.wait_for("pubsub connection .* is back")
        assert [e["data"] for e in client.events(2)] == ["before", "during the cut"]
        daemon.publish_form("message=after&channel=a")
        assert [e["data"] for e in client.events(3)][-1] == "after"
        assert daemon.request("GET", "/stats")[1]["broker"]["outages"] >= 1
    finally:
        daemon.stop()
        cut.cut()


def test_redis_killed_and_restarted(tmp_path, redis_prefix):  # noqa: F811
    redis = PrivateRedis(tmp_path)
    daemon = redis_daemon(tmp_path, redis_prefix, port=redis.port)
    try:
        client = SSEClient(daemon.port, "channels=a")
        daemon.publish_form("message=before&channel=a")
        client.events(1)
        redis.kill()
        daemon.wait_for(r"connection lost.*; reconnecting", 2)
        assert daemon.publish_form("message=x&channel=a")[0] == 503
        before = client.events(1)[0]["id"]
        redis.start()
        daemon.wait_for("(pubsub|history) connection .* is back", 2)
        # Redis lost everything: the daemon cannot tell what its streams missed, so it
        # closes them; each resumes with its own id and is told of the new epoch
        client.wait_closed()
        assert daemon.publish_form("message=after&channel=a")[0] == 200
        late = SSEClient(daemon.port, "channels=a", {"Last-Event-Id": before})
        gap, after = late.events(2)
        assert gap["event"] == "history-gap" and json.loads(gap["data"])["reason"] == "unknown"
        assert after["data"] == "after"
        late.close()
    finally:
        daemon.stop()
        redis.kill()


def test_a_frozen_redis_is_an_outage_not_a_hang(tmp_path, redis_prefix):  # noqa: F811
    import signal
    import time
    redis = PrivateRedis(tmp_path)
    daemon = redis_daemon(tmp_path, redis_prefix, "--redis-timeout=1", port=redis.port)
    try:
        client = SSEClient(daemon.port, "channels=a")
        assert daemon.publish_form("message=before&channel=a")[0] == 200
        redis.proc.send_signal(signal.SIGSTOP)  # the TCP connection stays open; no answers
        started = time.monotonic()
        status, answer = daemon.publish_form("message=frozen&channel=a&id=msg-1")
        took = time.monotonic() - started
        assert status == 503 and "retry with the same 'id'" in answer["error"]
        assert took < 4.0, took  # the reply timeout (1 s), plus a wait for the link
        daemon.wait_for(r"connection lost.*; reconnecting", 2)  # both links, PINGs included
        broker = daemon.request("GET", "/stats")[1]["broker"]
        assert broker["connected"] is False and broker["outages"] >= 2
        assert daemon.request("GET", "/readyz")[0] == 503
        redis.proc.send_signal(signal.SIGCONT)
        daemon.wait_for("(pubsub|history) connection .* is back", 2)
        # Redis may have run the timed-out command when it woke up: the retry with the
        # same id publishes it exactly once either way
        assert daemon.publish_form("message=frozen&channel=a&id=msg-1")[0] == 200
        assert daemon.publish_form("message=after&channel=a")[0] == 200
        assert [e["data"] for e in client.events(3)] == ["before", "frozen", "after"]
        assert daemon.request("GET", "/readyz")[0] == 200
    finally:
        if redis.proc is not None:
            redis.proc.send_signal(signal.SIGCONT)
        daemon.stop()
        redis.kill()
    log = "".join(daemon.log)
    import re
    assert len(re.findall(r"connection lost.*; reconnecting", log)) == 2  # per link, once
    assert "Traceback" not in log


def test_password_and_database_through_a_redis_url(tmp_path):
    redis = PrivateRedis(tmp_path, "--requirepass", "s3cret")
    daemon = Daemon(tmp_path, "--broker=redis",
                    f"--redis-url=redis://:s3cret@127.0.0.1:{redis.port}/3")
    try:
        daemon.wait_for(rf"redis (history|pubsub) connection .*:{redis.port}/3 is up", 2)
        client = SSEClient(daemon.port, "channels=a")
        assert daemon.publish_form("message=authenticated&channel=a")[0] == 200
        assert client.events(1)[0]["data"] == "authenticated"
        check = RedisPublisher("127.0.0.1", redis.port, db=3, password="s3cret")
        assert check.command("EXISTS", "cyclone-sse:ch:a") == 1  # stored in database 3
        check.close()
    finally:
        daemon.stop()
        redis.kill()


def test_publisher_command_line_tool(tmp_path, redis_prefix):  # noqa: F811
    import subprocess
    import sys

    from tests.daemon import ROOT
    daemon = redis_daemon(tmp_path, redis_prefix, "--http-secret=k")
    try:
        client = SSEClient(daemon.port, "channels=cli")
        tool = [sys.executable, str(ROOT / "extras" / "publisher.py")]
        http = subprocess.run([*tool, "http", "cli", "via http", "--event", "note", "--key", "k",
                               "--url", f"http://127.0.0.1:{daemon.port}"],
                              capture_output=True, text=True, timeout=30)
        assert http.returncode == 0 and json.loads(http.stdout)[0]["channel"] == "cli"
        wrong = subprocess.run([*tool, "http", "cli", "x", "--key", "nope",
                                "--url", f"http://127.0.0.1:{daemon.port}"],
                               capture_output=True, text=True, timeout=30)
        assert wrong.returncode == 1 and "401" in wrong.stderr
        durable = subprocess.run([*tool, "redis", "cli", "via redis", "--prefix", redis_prefix],
                                 capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert durable.returncode == 0, durable.stderr
        events = client.events(2)
        assert [(e["event"], e["data"]) for e in events] == [
            ("note", "via http"), ("message", "via redis")]
        assert events[1]["id"] == durable.stdout.strip()
    finally:
        daemon.stop()


def test_two_daemons_share_one_port_with_reuse_port(tmp_path, redis_prefix):  # noqa: F811
    from tests.services import free_port
    port = free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = redis_daemon(tmp_path / "a", redis_prefix, f"--port={port}", "--reuse-port")
    b = redis_daemon(tmp_path / "b", redis_prefix, f"--port={port}", "--reuse-port")
    try:
        clients = [SSEClient(port, "channels=shared") for _ in range(40)]
        seen = {}
        for _ in range(30):  # each request lands on either daemon
            stats = a.request("GET", "/stats")[1]
            seen[stats["pid"]] = stats["connections"]
        assert set(seen) == {a.proc.pid, b.proc.pid}
        assert sum(seen.values()) == 40 and min(seen.values()) > 0  # the kernel spread them
        a.publish_form("message=to+all&channel=shared")
        assert all(c.events(1)[0]["data"] == "to all" for c in clients)
    finally:
        a.stop()
        b.stop()


def test_redis_over_tls_with_a_private_ca_and_a_client_certificate(tmp_path):
    from tests.services import free_port, private_ca
    private_ca(tmp_path)
    tls_port = free_port()
    redis = PrivateRedis(tmp_path, "--port", "0", "--tls-port", str(tls_port),
                         "--tls-cert-file", str(tmp_path / "server.crt"),
                         "--tls-key-file", str(tmp_path / "server.key"),
                         "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
                         "--tls-auth-clients", "yes")
    url = f"--redis-url=rediss://localhost:{tls_port}"
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = Daemon(tmp_path / "good", "--broker=redis", url,
                  f"--redis-ca-file={tmp_path / 'ca.crt'}",
                  f"--redis-cert-file={tmp_path / 'client.crt'}",
                  f"--redis-key-file={tmp_path / 'client.key'}")
    bad = Daemon(tmp_path / "bad", "--broker=redis", url)  # trusts only the system's CAs
    try:
        good.wait_for(r"redis (history|pubsub) connection to rediss://.* is up", 2)
        client = SSEClient(good.port, "channels=a")
        assert good.publish_form("channel=a&message=over+tls")[0] == 200
        assert client.events(1)[0]["data"] == "over tls"
        client.close()
        bad.wait_for("certificate verify failed", 2)  # one clear line per link
        assert bad.publish_form("channel=a&message=x")[0] == 503
    finally:
        good.stop()
        bad.stop()
        redis.kill()
    log = "".join(bad.log)
    warnings = [line for line in bad.log if "#warn]" in line]
    assert sum("certificate verify failed" in line for line in warnings) == 2  # one a link
    assert "Traceback" not in log
    # and the refusal says why, not only "unreachable"
    assert any("503" in line and "certificate verify failed" in line for line in bad.log)


def test_a_standby_hears_only_the_raw_channels_its_clients_use_once_each(
        tmp_path, redis_prefix):  # noqa: F811
    """Only the leader listens to every raw channel; a standby hears those its clients
    use — once, though a name and a pattern both match — and, taking over, stores
    those, and only those, once."""
    a, b = leader_and_standby(tmp_path, redis_prefix)
    redis = RedisPublisher(*REDIS)
    try:
        named, by_pattern = SSEClient(b.port, "channels=raw"), SSEClient(b.port, "channels=ra*")
        redis.publish_raw("raw", "before")
        assert named.events(1)[0]["data"] == "before"
        assert by_pattern.events(1)[0]["data"] == "before"
        assert a.request("GET", "/stats")[1]["broker"]["raw_all"] is True
        assert b.request("GET", "/stats")[1]["broker"]["raw_all"] is False
        a.proc.kill()
        for n in range(3):  # no daemon stores these for now
            redis.publish_raw("raw", f"during {n}")
            redis.publish_raw("nobody-listens", f"lost {n}")
        took_over = b.wait_for(r"now stores raw redis messages .*\((\d+) heard before that")
        assert took_over[0].group(1) == "3"  # not 6 (two subscriptions), not 9 (nobody's)
        events = named.events(4)[1:]
        assert [e["data"] for e in events] == [f"during {n}" for n in range(3)]
        assert b.request("GET", "/stats")[1]["broker"]["raw_all"] is True  # leading now
    finally:
        redis.close()
        b.stop()
        a.stop(signalled=True)


def test_a_cluster_node_named_as_one_server_is_refused_clearly(tmp_path, redis_prefix):  # noqa: F811
    """A Cluster node given as redis:// (the scripts would touch many slots): the way to
    name a Cluster is said once in the log and in every refusal, rather than a 503
    that names nothing."""
    # (the bus port named: by default it is port + 10000, past 65535 for a high port)
    node = PrivateRedis(tmp_path, "--cluster-enabled", "yes", "--cluster-port",
                        str(free_port()), "--cluster-config-file", str(tmp_path / "nodes.conf"))
    (tmp_path / "d").mkdir()
    daemon = Daemon(tmp_path / "d", "--broker=redis", f"--redis-port={node.port}",
                    f"--redis-prefix={redis_prefix}")
    try:
        daemon.wait_for(r"redis\+cluster://")
        status, answer = daemon.publish_form("message=x&channel=a")
        assert status == 503 and "--redis-url=redis+cluster://" in answer["error"]
        status, answer = daemon.request("GET", "/readyz")
        assert status == 503
    finally:
        daemon.stop()
        node.kill()
    warnings = [line for line in daemon.log if "#warn]" in line and "Cluster" in line]
    assert len(warnings) == 1  # one per outage, however many reconnections it took
    assert "Traceback" not in "".join(daemon.log)
