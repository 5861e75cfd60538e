"""Redis Cluster: a real three-primary Cluster with replicas on loopback
(``redis-cli --cluster create``), real daemons, and faults while a sequence-numbered
publisher runs: ``CLUSTER FAILOVER``, ``kill -9`` of a primary, a slot migrated.
Subscribers on two daemons must get every acknowledged event once, or a
``history-gap``."""

from __future__ import annotations

import json
import time

import pytest

from cyclone_sse.event import SHARD_NAMES, EventId, Position
from cyclone_sse.history.redis_cluster import shard_of, shard_tag
from cyclone_sse.links.redis import RedisAddress
from cyclone_sse.links.redis_cluster import key_slot
from tests.daemon import Daemon, SSEClient, readme_redis_urls
from tests.faults import Browser, Publisher, check_exactly_once_or_gap
from tests.services import ClusterSet
from tests.test_metrics import daemon_numbers, exported

# the pure parts --------------------------------------------------------------------


def test_key_slots_are_redis_clusters_own():
    # (the figures of the Redis Cluster specification, and its hash tag rules)
    assert key_slot("123456789") == 0x31C3
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == \
        key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # an empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")


def test_each_shard_gets_its_sixteenth_of_the_slots_whatever_the_prefix():
    for prefix in ("cyclone-sse", "app:prod", "x"):
        for n, shard in enumerate(SHARD_NAMES):
            assert key_slot(shard_tag(prefix, shard)) // 1024 == n


def test_positions_over_shards_are_read_back_and_garbage_is_no_position():
    a, b = EventId("1796389856626917", 5, "2"), EventId("1796389860719047", 12, "c")
    text = str(Position.of([b, a]))
    assert text == "2.horm3v82cl-5_c.horm3xnruv-12"  # sorted by shard, epochs in base 36
    assert Position.parse(text) == Position((a, b))
    assert Position.parse("ep-4") == Position((EventId("ep", 4),))  # one order: unchanged
    for garbage in ("2.x-1_2.y-2", "ep-1_ep-2", "g.abc-1", "2.-1", "2.a$c-1", "2.abc-x",
                    "_", "2.abc-1_"):
        assert Position.parse(garbage) is None, garbage


def test_cluster_urls_are_read_and_bad_ones_named():
    address = RedisAddress.from_url("rediss+cluster://:p%40ss@n1:7000,10.0.0.2:7001")
    assert address.cluster == (("n1", 7000), ("10.0.0.2", 7001))
    assert (address.password, address.tls, address.db) == ("p@ss", True, 0)
    assert "p@ss" not in str(address)
    examples = readme_redis_urls("+cluster")  # the README's, as written
    assert len(examples) == 2
    for example in examples:
        assert len(RedisAddress.from_url(example).cluster) >= 2
    for bad, reason in [("redis+cluster://n1", "host:port"),
                        ("redis+cluster://n1:7000/2", "database 0 only")]:
        with pytest.raises(ValueError, match=reason):
            RedisAddress.from_url(bad)


# on a real Cluster -----------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    deployment = ClusterSet(tmp_path)
    yield deployment
    deployment.close()


def cluster_daemon(tmp_path, cluster, name="d", *options):
    folder = tmp_path / name
    folder.mkdir()
    daemon = Daemon(folder, "--broker=redis", f"--redis-url={cluster.url}",
                    "--redis-timeout=1", *options)
    end = time.monotonic() + 10
    while daemon.request("GET", "/readyz")[0] != 200:
        assert time.monotonic() < end, "".join(daemon.log)
        time.sleep(0.05)
    return daemon


def channels_on_primaries(cluster, count=3):
    """Channels whose shards are owned by ``count`` different primaries."""
    found: dict[int, str] = {}
    for n in range(1000):
        name = f"seq.{n}"
        owner = cluster.owner_of(key_slot(shard_tag("cyclone-sse", shard_of(name)))).port
        found.setdefault(owner, name)
        if len(found) == count:
            return sorted(found.values())
    raise AssertionError("no channels on enough primaries")


def publish(daemon, channel, data):
    return daemon.request("POST", "/publish", json.dumps({"channel": channel, "data": data}),
                          {"Content-Type": "application/json"})


def test_every_key_of_a_shard_lives_in_its_slot_and_shards_spread_over_primaries(
        tmp_path, cluster):
    daemon = cluster_daemon(tmp_path, cluster)
    try:
        for n in range(64):
            status, answer = publish(daemon, f"room.{n}", "x")
            assert status == 200, answer
        keys_per_primary = []
        for node in cluster.live():
            if "role:master" not in cluster.cli(node.port, "INFO", "replication"):
                continue
            keys = cluster.cli(node.port, "--scan").split()
            keys_per_primary.append(len(keys))
            for key in keys:
                assert key.startswith("{cyclone-sse:"), key
                assert key_slot(key) == key_slot(key[1:key.index("}")])
        assert len(keys_per_primary) == 3 and all(keys_per_primary)  # no single hot shard
        # no key every publish writes: each shard has its own sequence
        sequences = [k for node in cluster.live()
                     for k in cluster.cli(node.port, "--scan", "--pattern", "*:seq").split()]
        assert len(set(sequences)) == len(SHARD_NAMES)
    finally:
        daemon.stop()


def assert_same_per_channel(events, sent):
    """Each event once, and each channel's in publish order (between shards, a replay
    orders by the millisecond each was stored)."""
    numbers = [int(e["data"]) for e in events]
    assert sorted(numbers) == [int(d) for _, d in sent]
    for channel in {c for c, _ in sent}:
        mine = [n for n in numbers if (channel, str(n)) in sent]
        assert mine == sorted(mine)


def test_one_last_event_id_resumes_channels_on_several_shards_exactly_once_elsewhere(
        tmp_path, cluster):
    a = cluster_daemon(tmp_path, cluster, "a")
    b = cluster_daemon(tmp_path, cluster, "b")
    try:
        channels = channels_on_primaries(cluster)
        queries = ["channels=" + ",".join(channels), "channels=seq.*"]
        streams = [SSEClient(a.port, query) for query in queries]  # (live once it is open)
        sent = [(channels[n % 3], str(n)) for n in range(30)]
        for channel, data in sent:
            assert publish(b, channel, data)[0] == 200
        for stream, query, longest in zip(streams, queries, (80, 400), strict=True):
            events = stream.events(30)[:10]  # (as if it had gone after the tenth)
            assert [e["data"] for e in events] == [d for _, d in sent[:10]]
            resume = events[-1]["id"]
            assert len(resume) < longest  # three shards' ids; a pattern's: all sixteen
            stream.close()
            # on the other daemon, from that one id: the other twenty, each once
            again = SSEClient(b.port, query, {"Last-Event-ID": resume})
            rest = again.events(20)
            assert_same_per_channel(rest, sent[10:])
            again.close()
        # a long-poll answers the same, with the position to poll from next
        resume = str(Position.parse(resume))
        status, answer = b.request("GET", "/?transport=poll&channels=" + ",".join(channels) +
                                   "&lastEventId=" + resume)
        assert status == 200
        assert_same_per_channel(answer["events"], sent[10:])
        assert Position.parse(answer["lastEventId"]) is not None
    finally:
        a.stop()
        b.stop()


def test_a_daemon_subscribes_to_the_shard_channels_its_clients_use_and_no_others(
        tmp_path, cluster):
    a = cluster_daemon(tmp_path, cluster, "a")
    try:
        channels = channels_on_primaries(cluster)
        stream = SSEClient(a.port, f"channels={channels[0]}")

        def subscribers(channel):
            tag = "{" + shard_tag("cyclone-sse", shard_of(channel)) + "}"
            owner = cluster.owner_of(key_slot(tag))
            reply = cluster.cli(owner.port, "PUBSUB", "SHARDNUMSUB", f"{tag}:ev:{channel}")
            return int(reply.split()[1])

        assert subscribers(channels[0]) == 1
        assert subscribers(channels[1]) == subscribers(channels[2]) == 0
        for channel in channels:  # what nobody here listens to never reaches this daemon
            assert publish(a, channel, "x")[0] == 200
        assert [e["data"] for e in stream.events(1)] == ["x"]
        stream.close()
    finally:
        a.stop()


def _migrate_slot(cluster, slot, target, announce=True):
    """Move ``slot`` to ``target`` as ``redis-cli --cluster reshard`` does: IMPORTING and
    MIGRATING, the keys with MIGRATE, then (``announce``) the new owner announced."""
    source = cluster.owner_of(slot)
    ids = {n.port: cluster.cli(n.port, "CLUSTER", "MYID").strip() for n in cluster.live()}
    cluster.cli(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source.port])
    cluster.cli(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.port])
    while True:
        keys = cluster.cli(source.port, "CLUSTER", "GETKEYSINSLOT", str(slot), "1000").split()
        if not keys:
            break
        cluster.cli(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000",
                    "KEYS", *keys)
    if announce:
        for node in cluster.live():
            cluster.cli(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
    return ids


def test_a_publish_to_a_slot_half_migrated_follows_ask_and_then_moved(tmp_path, cluster):
    """Keys moved, owner not yet announced: the source answers ASK, and the append runs
    on the target after ASKING; once the owner changes, MOVED.  Nothing is lost."""
    daemon = cluster_daemon(tmp_path, cluster)
    try:
        channel = channels_on_primaries(cluster)[0]
        stream = SSEClient(daemon.port, f"channels={channel}")
        assert publish(daemon, channel, "before")[0] == 200
        slot = key_slot(shard_tag("cyclone-sse", shard_of(channel)))
        target = next(n for n in cluster.live() if n is not cluster.owner_of(slot) and
                      "role:master" in cluster.cli(n.port, "INFO", "replication"))
        ids = _migrate_slot(cluster, slot, target, announce=False)
        status, answer = publish(daemon, channel, "while migrating")
        assert status == 200, answer
        stats = daemon.request("GET", "/stats")[1]["history"]
        assert stats["redirects"] >= 1  # (ASK: the keys are on the target already)
        exported(*daemon_numbers(daemon))  # a Cluster's numbers are declared too
        for node in cluster.live():
            cluster.cli(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
        assert publish(daemon, channel, "after")[0] == 200
        assert [e["data"] for e in stream.events(3)] == ["before", "while migrating", "after"]
        stream.close()
    finally:
        daemon.stop()
    log = "".join(daemon.log)
    assert "Traceback" not in log, log[-4000:]


def _after(event_id, position):
    """Whether ``event_id`` comes after ``position`` on its shard."""
    mine = position.get(event_id.shard)
    return mine is None or mine.epoch != event_id.epoch or event_id.seq > mine.seq


@pytest.mark.parametrize("fault", ["CLUSTER FAILOVER", "kill -9 of a primary",
                                   "a slot migrated"])
def test_daemons_follow_the_cluster_and_lose_nothing_in_silence(tmp_path, cluster, fault):
    a = cluster_daemon(tmp_path, cluster, "a")
    b = cluster_daemon(tmp_path, cluster, "b")
    try:
        channels = tuple(channels_on_primaries(cluster))
        on_a = Browser(a.port, query="channels=seq.*")
        on_b = Browser(b.port, query="channels=" + ",".join(channels))
        publisher = Publisher(a, channels)
        publisher.start()
        time.sleep(1.0)
        victim_slot = key_slot(shard_tag("cyclone-sse", shard_of(channels[0])))
        victim = cluster.owner_of(victim_slot)
        fault_at = time.monotonic()
        if fault == "CLUSTER FAILOVER":
            replica_port = next(
                n.port for n in cluster.live()
                if f"master_port:{victim.port}" in cluster.cli(n.port, "INFO", "replication"))
            assert cluster.cli(replica_port, "CLUSTER", "FAILOVER").strip() == "OK"
        elif fault == "kill -9 of a primary":
            victim.kill()
        else:
            target = next(n for n in cluster.live() if n is not victim and "role:master" in
                          cluster.cli(n.port, "INFO", "replication"))
            _migrate_slot(cluster, victim_slot, target)
        cluster.wait_ok()
        switched_at = time.monotonic()
        while not any(t > switched_at for t in publisher.answered) or \
                publisher.acknowledged.get(max(publisher.acknowledged), "") == "":
            assert time.monotonic() - switched_at < 10, "publishes never recovered"
            time.sleep(0.02)
        recovered = time.monotonic()
        time.sleep(1.0)
        publisher.stop()
        refused = [t for t, _ in publisher.refused if t > fault_at]
        print(f"{fault}: cluster ok after {switched_at - fault_at:.2f} s; publishes answered "
              f"{recovered - switched_at:.2f} s later; {len(refused)} refused; "
              f"{len(publisher.acknowledged)} acknowledged")
        assert all(status == 503 for _, status in publisher.refused)  # never a hang
        assert recovered - switched_at <= 3.0
        until = time.monotonic() + 3.0
        received = []
        for client in (on_a, on_b):
            received.append(client.read_until(until))
            numbers, _ = check_exactly_once_or_gap(received[-1], publisher.acknowledged)
            assert len(numbers) > len(publisher.acknowledged) / 2
            until = time.monotonic() + 0.5
        # a client of daemon a, gone before the fault, resumes on daemon b from the
        # position it had: exactly what came after it on each shard, or a gap
        messages = [e for e in received[0] if e["event"] == "message"]
        mark = messages[len(messages) // 5]
        position = Position.parse(mark["id"])
        later = {n for n, i in publisher.acknowledged.items()
                 if _after(EventId.parse(i), position)}
        resumed = Browser(b.port, mark["id"], query="channels=seq.*")
        numbers, gaps = check_exactly_once_or_gap(
            resumed.read_until(time.monotonic() + 2.0), later)
        assert set(numbers) <= later or gaps
        for client in (on_a, on_b, resumed):
            client.close()
        assert a.request("GET", "/readyz")[0] == 200
    finally:
        a.stop()
        b.stop()
    for daemon in (a, b):
        log = "".join(daemon.log)
        assert "Traceback" not in log, log[-3000:]


def test_raw_publishes_on_any_node_are_stored_once_and_reach_every_subscriber(
        tmp_path, cluster):
    """The 2013 path on a Cluster: ``redis-cli PUBLISH`` on any node reaches every node;
    the elected daemon stores it (in its shard), each subscriber gets it once."""
    a = cluster_daemon(tmp_path, cluster, "a")
    b = cluster_daemon(tmp_path, cluster, "b")
    try:
        channels = channels_on_primaries(cluster)
        streams = [SSEClient(d.port, "channels=" + ",".join(channels)) for d in (a, b)]
        while b"stream-open" not in streams[1].buffer:
            streams[1].buffer += streams[1]._recv()
        before = streams[1].last_id()  # the position before any raw message
        end = time.monotonic() + 10
        while not any(d.request("GET", "/stats")[1]["broker"]["raw_leader"] for d in (a, b)):
            assert time.monotonic() < end, "no daemon leads raw ingestion"
            time.sleep(0.05)
        nodes = cluster.live()
        for n, channel in enumerate(channels):
            cluster.cli(nodes[n].port, "PUBLISH", channel, f"raw {n}")
        for stream in streams:
            events = stream.events(3)
            assert sorted(e["data"] for e in events) == ["raw 0", "raw 1", "raw 2"]
            assert all(Position.parse(e["id"]) for e in events)
            stream.close()
        leaders = [d.request("GET", "/stats")[1]["broker"]["raw_leader"] for d in (a, b)]
        assert leaders.count(True) == 1
        # stored once: a replay from the start has each once
        _, answer = b.request("GET", "/?transport=poll&channels=" + ",".join(channels)
                                   + "&lastEventId=" + before)
        assert sorted(e["data"] for e in answer["events"]) == ["raw 0", "raw 1", "raw 2"]
    finally:
        a.stop()
        b.stop()


def test_presence_and_websocket_streams_work_across_daemons_on_a_cluster(tmp_path, cluster):
    from websockets.sync.client import connect
    options = ("--policies=room.*=public+presence",)
    a = cluster_daemon(tmp_path, cluster, "a", *options)
    b = cluster_daemon(tmp_path, cluster, "b", *options)
    try:
        channels = channels_on_primaries(cluster)
        with connect(f"ws://127.0.0.1:{a.port}/", open_timeout=10) as ann, \
                connect(f"ws://127.0.0.1:{b.port}/", open_timeout=10) as bob:
            clients = set()
            for conn in (ann, bob):
                conn.send(json.dumps({"type": "subscribe", "id": 1, "channels": ["room.1"]}))
                clients.add(json.loads(conn.recv(timeout=10))["client"])
            end = time.monotonic() + 10
            while True:
                status, answer = b.request("GET", "/presence?channel=room.1")
                if status == 200 and {c["client"] for c in answer["clients"]} == clients:
                    break
                assert time.monotonic() < end, answer
                time.sleep(0.05)
            # a WebSocket subscription over three shards: each event's id is its position
            ann.send(json.dumps({"type": "subscribe", "id": 2, "channels": channels}))
            subscribed = json.loads(ann.recv(timeout=10))
            while subscribed["type"] in ("join", "leave"):  # (room.1's presence)
                subscribed = json.loads(ann.recv(timeout=10))
            assert subscribed["type"] == "subscribed"
            for n, channel in enumerate(channels):
                assert publish(b, channel, str(n))[0] == 200
            got = [json.loads(ann.recv(timeout=10)) for _ in channels]
            assert [m["data"] for m in got] == ["0", "1", "2"]
            resume = got[0]["id"]
            assert len(Position.parse(resume).ids) == 3
            bob.send(json.dumps({"type": "subscribe", "id": 2, "channels": channels,
                                 "lastEventId": resume}))
            replies = []
            while len([m for m in replies if m["type"] == "event"]) < 2:
                replies.append(json.loads(bob.recv(timeout=10)))
            # (two shards: replayed by the millisecond each was stored, so either order)
            assert sorted(m["data"] for m in replies if m["type"] == "event") == ["1", "2"]
    finally:
        a.stop()
        b.stop()
    for daemon in (a, b):
        assert "Traceback" not in "".join(daemon.log)
