"""Redis behind Sentinel: real primary, replica and three Sentinels on loopback, real
daemons following the primary through ``SENTINEL FAILOVER`` and ``kill -9``, with a
sequence-numbered publisher running and subscribers that must get every acknowledged
event once, or a ``history-gap``."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.daemon import DEADLINE, Daemon, SSEClient, readme_redis_urls
from tests.faults import Browser, Publisher, check_exactly_once_or_gap
from tests.services import SentinelSet


@pytest.fixture
def sentinels(tmp_path):
    deployment = SentinelSet(tmp_path)
    yield deployment
    deployment.close()


def sentinel_daemon(tmp_path, deployment, name="d"):
    folder = tmp_path / name
    folder.mkdir()
    daemon = Daemon(folder, "--broker=redis", f"--redis-url={deployment.url}",
                    "--redis-timeout=1")
    daemon.wait_for("redis (history|pubsub) connection .* is up", 2)
    return daemon


@pytest.mark.parametrize("fault", ["SENTINEL FAILOVER", "kill -9 of the primary",
                                   "a replica behind, promoted"])
def test_daemons_follow_the_primary_and_lose_nothing_in_silence(tmp_path, sentinels, fault):
    a = sentinel_daemon(tmp_path, sentinels, "a")
    b = sentinel_daemon(tmp_path, sentinels, "b")
    try:
        on_a, on_b = Browser(a.port), Browser(b.port)
        publisher = Publisher(a)
        publisher.start()
        time.sleep(1.0)  # (a run of acknowledged events before the fault)
        old_primary = sentinels.primary_port()
        fault_at = time.monotonic()
        if fault == "SENTINEL FAILOVER":
            assert sentinels.ask("SENTINEL", "FAILOVER", sentinels.MASTER).startswith(b"+OK")
        elif fault == "kill -9 of the primary":
            sentinels.primary.kill()
        else:
            # the replica stops replicating while the primary acknowledges more events,
            # then the primary dies and the replica, behind, is promoted: the new
            # primary's sequence is behind the ids already handed out
            assert sentinels.replica.proc is not None
            # (past 256 KB queued for it, the primary drops the frozen replica's link:
            # what it takes from then on, the replica never gets)
            assert sentinels.command(sentinels.primary.port, "CONFIG", "SET",
                                     "client-output-buffer-limit",
                                     "replica 256kb 0 0").startswith(b"+OK")
            sentinels.replica.proc.send_signal(signal.SIGSTOP)
            for _ in range(60):  # 12 MB on another channel: more than socket buffers hold
                assert a.request("POST", "/publish", json.dumps(
                    {"channel": "bulk", "data": "x" * 200_000}),
                    {"Content-Type": "application/json"})[0] == 200
            time.sleep(0.5)
            behind = len(publisher.acknowledged)
            sentinels.primary.kill()
            sentinels.replica.proc.send_signal(signal.SIGCONT)
            fault_at = time.monotonic()
        sentinels.wait_switch(old_primary)
        switched_at = time.monotonic()
        # publishes recover without an operator, within the failover time + 2 s
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and not any(t > switched_at + 0.5
                                                 for t in publisher.answered):
            time.sleep(0.05)
        recovered = min(t for t in publisher.answered if t > switched_at)
        time.sleep(1.0)
        publisher.stop()
        refused_after = [t for t, _ in publisher.refused if t > fault_at]
        print(f"{fault}: Sentinel switched after {switched_at - fault_at:.2f} s; publishes "
              f"answered again {recovered - switched_at:.2f} s after the switch; "
              f"{len(refused_after)} refused meanwhile; "
              f"{len(publisher.acknowledged)} acknowledged")
        assert recovered - switched_at <= 2.0
        assert all(status == 503 for _, status in publisher.refused)  # never a hang
        until = time.monotonic() + 3.0
        for client in (on_a, on_b):
            check_exactly_once_or_gap(client.read_until(until), publisher.acknowledged)
            until = time.monotonic() + 0.5
        # a client resuming from before the fault gets what it missed once, or a gap
        first_id = publisher.acknowledged[min(publisher.acknowledged)]
        resumed = Browser(b.port, first_id)
        events = resumed.read_until(time.monotonic() + 2.0)
        later = {n for n in publisher.acknowledged if n > min(publisher.acknowledged)}
        check_exactly_once_or_gap(events, later)
        stats = a.request("GET", "/stats")[1]
        assert stats["broker"]["connected"] is True
        if fault == "a replica behind, promoted":
            assert behind > 20  # (events were acknowledged while it was frozen)
            epochs = {i.rpartition("-")[0] for i in publisher.acknowledged.values()}
            assert len(epochs) == 2  # a new epoch began: no id names two events
        for client in (on_a, on_b, resumed):
            client.close()
    finally:
        a.stop()
        b.stop()
    for daemon in (a, b):
        log = "".join(daemon.log)
        assert "Traceback" not in log, log[-3000:]


def test_sentinel_urls_are_read_and_bad_ones_named():
    from cyclone_sse.links.redis import RedisAddress
    address = RedisAddress.from_url(
        "rediss+sentinel://:p%40ss@s1:26379,10.0.0.2:26380/my%20master/3")
    assert address.sentinels == (("s1", 26379), ("10.0.0.2", 26380))
    assert (address.master, address.db, address.password, address.tls) == (
        "my master", 3, "p@ss", True)
    assert str(address) == "rediss+sentinel://s1:26379,10.0.0.2:26380/my master/3"
    assert "p@ss" not in str(address)
    examples = readme_redis_urls("+sentinel")  # the README's, as written
    assert len(examples) == 2
    for example in examples:
        parsed = RedisAddress.from_url(example)
        assert parsed.sentinels and parsed.master == "mymaster"
    for bad, reason in [("redis+sentinel://s1:26379", "name the master"),
                        ("redis+sentinel://s1/m", "host:port"),
                        ("redis+sentinel://s1:99999/m", "host:port"),
                        ("redis+sentinel://s1:1/m/x", "database")]:
        with pytest.raises(ValueError, match=reason):
            RedisAddress.from_url(bad)


def test_a_publish_too_few_replicas_confirm_is_a_503_and_its_retry_is_kept_once(
        tmp_path, sentinels):
    daemon = Daemon(tmp_path, "--broker=redis", f"--redis-url={sentinels.url}",
                    "--redis-timeout=1", "--redis-min-replicas=1")
    try:
        daemon.wait_for("redis (history|pubsub) connection .* is up", 2)
        stream = SSEClient(daemon.port, "channels=seq")

        def publish(n):
            return daemon.request("POST", "/publish", json.dumps(
                {"channel": "seq", "data": str(n), "id": f"msg-{n}"}),
                {"Content-Type": "application/json"})

        assert publish(0)[0] == 200  # the replica confirmed it
        assert sentinels.replica.proc is not None
        sentinels.replica.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        status, answer = publish(1)
        took = time.monotonic() - started
        assert status == 503 and "confirmed by 0 of 1 replicas" in answer["error"]
        assert took < 1.5  # half --redis-timeout, not a hang
        sentinels.replica.proc.send_signal(signal.SIGCONT)
        status, answer = publish(1)  # the retry, with the same id
        assert status == 200 and answer["events"][0]["duplicate"] is True
        assert [e["data"] for e in stream.events(2)] == ["0", "1"]  # delivered once
        stats = daemon.request("GET", "/stats")[1]
        assert stats["history"]["not_durable"] == 1
        stream.close()
    finally:
        daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def test_raw_publishes_are_stored_once_and_delivered_after_a_failover(tmp_path, sentinels):
    """The 2013 path, ``redis-cli PUBLISH channel message`` on whichever server is the
    primary: one daemon (the elected leader) stores it, every subscriber gets it once,
    before and after the primary changed."""
    a = sentinel_daemon(tmp_path, sentinels, "a")
    b = sentinel_daemon(tmp_path, sentinels, "b")
    try:
        on_b = Browser(b.port)
        end = time.monotonic() + DEADLINE
        while not any(d.request("GET", "/stats")[1]["broker"]["raw_leader"] for d in (a, b)):
            assert time.monotonic() < end, "no daemon leads raw ingestion"
            time.sleep(0.05)
        sentinels.command(sentinels.primary_port(), "PUBLISH", "seq", "1000")
        old = sentinels.primary_port()
        assert sentinels.ask("SENTINEL", "FAILOVER", sentinels.MASTER).startswith(b"+OK")
        sentinels.wait_switch(old)
        # until both daemons follow (a raw message before that may still go to the old
        # primary's subscribers: the test publishes until one is stored after the switch)
        n = 1001
        while time.monotonic() < end:
            sentinels.command(sentinels.primary_port(), "PUBLISH", "seq", str(n))
            events = on_b.read_until(time.monotonic() + 0.3)
            if any(e["data"] == str(n) for e in events):
                break
            n += 1
        numbers = [int(e["data"]) for e in on_b.read_until(time.monotonic() + 0.5)
                   if e["event"] == "message"]
        assert numbers[0] == 1000 and numbers[-1] == n
        assert len(numbers) == len(set(numbers))  # each stored and delivered once
        leaders = [d.request("GET", "/stats")[1]["broker"]["raw_leader"] for d in (a, b)]
        assert leaders.count(True) == 1
        on_b.close()
    finally:
        a.stop()
        b.stop()
    for daemon in (a, b):
        assert "Traceback" not in "".join(daemon.log)


def test_presence_follows_the_primary(tmp_path, sentinels):
    """Presence through Sentinel, before and after the primary is killed: both members
    listed on the promoted replica.  (Members are also written again on every
    reconnection, which covers a replica that lacked the last joins; this test's
    replica was caught up.)"""
    from websockets.sync.client import connect
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        daemon = Daemon(tmp_path / name, "--broker=redis", f"--redis-url={sentinels.url}",
                        "--redis-timeout=1", "--policies=room.*=public+presence")
        daemon.wait_for("redis presence pubsub connection .* is up")
        daemons.append(daemon)
    a, b = daemons
    try:
        with connect(f"ws://127.0.0.1:{a.port}/", open_timeout=DEADLINE) as ann, \
                connect(f"ws://127.0.0.1:{b.port}/", open_timeout=DEADLINE) as bob:
            clients = set()
            for conn in (ann, bob):
                conn.send(json.dumps({"type": "subscribe", "id": 1, "channels": ["room.1"]}))
                clients.add(json.loads(conn.recv(timeout=DEADLINE))["client"])

            def listed() -> set[str]:
                status, answer = b.request("GET", "/presence?channel=room.1")
                return {c["client"] for c in answer["clients"]} if status == 200 else set()

            end = time.monotonic() + DEADLINE
            while listed() != clients:
                assert time.monotonic() < end, "both members never listed"
                time.sleep(0.05)
            sentinels.primary.kill()
            sentinels.wait_log(b"+switch-master")
            while listed() != clients:  # (both daemons reconnect and renew)
                assert time.monotonic() < end, f"after the failover: {listed()}"
                time.sleep(0.05)
    finally:
        for daemon in daemons:
            daemon.stop()
    for daemon in daemons:
        assert "Traceback" not in "".join(daemon.log)
