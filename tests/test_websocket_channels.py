"""WebSocket channels both ways, over real sockets and real brokers: several
subscriptions per connection, client publishes under channel policies, presence across
daemons sharing Redis, and resume across a daemon restart with Redis history."""

from __future__ import annotations

import json
import signal
import time

import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.services import amqp_exchange, redis_prefix  # noqa: F401
from tests.test_amqp import amqp_daemon
from tests.test_redis import redis_daemon

SECRET = "k" * 32


def ws(daemon, query=""):
    return connect(f"ws://127.0.0.1:{daemon.port}/{query}", open_timeout=DEADLINE,
                   compression=None)


def ask(conn, message):
    conn.send(json.dumps(message))
    return next_message(conn)


def next_message(conn):
    return json.loads(conn.recv(timeout=DEADLINE))


def token(sub, channels, seconds=600):
    return jwt.encode({"sub": sub, "channels": channels, "exp": int(time.time()) + seconds},
                      SECRET)


@pytest.fixture
def daemon(tmp_path):
    daemon = Daemon(tmp_path, "--policies=chat.*=public+publish,room.*=public+presence",
                    "--ws-publish-rate=1", "--ws-max-subscriptions=3")
    yield daemon
    daemon.stop()
    assert "Traceback" not in "".join(daemon.log)


def test_several_subscriptions_on_one_connection_and_unsubscribe(daemon):
    with ws(daemon) as conn:
        first = ask(conn, {"type": "subscribe", "id": 1, "channels": ["a", "b"]})
        second = ask(conn, {"type": "subscribe", "id": 2, "channels": ["news.*"]})
        assert first["client"] == second["client"]  # one connection, one client id
        for channel in ("a", "b", "news.x"):
            daemon.publish_form(f"channel={channel}&message={channel}")
        assert [next_message(conn)["channel"] for _ in range(3)] == ["a", "b", "news.x"]
        assert ask(conn, {"type": "unsubscribe", "id": 3, "channels": ["a"]}) == \
            {"type": "unsubscribed", "id": 3, "channels": ["a"]}
        assert ask(conn, {"type": "unsubscribe", "id": 4, "channels": ["a"]})["code"] == 404
        for channel in ("a", "b", "news.y"):  # a no more; b and the pattern still
            daemon.publish_form(f"channel={channel}&message={channel}")
        assert [next_message(conn)["channel"] for _ in range(2)] == ["b", "news.y"]
        stats = daemon.request("GET", "/stats")[1]
        assert dict(map(tuple, stats["subscriptions"])) == {"b": 1, "news.*": 1}
        assert ask(conn, {"type": "unsubscribe", "id": 5, "channels": ["news.*", "b"]})[
            "type"] == "unsubscribed"
        assert daemon.request("GET", "/stats")[1]["connections"] == 0
        for n in range(3):  # --ws-max-subscriptions=3
            assert ask(conn, {"type": "subscribe", "id": 6, "channels": [f"c{n}"]})[
                "type"] == "subscribed"
        refused = ask(conn, {"type": "subscribe", "id": 7, "channels": ["c9"]})
        assert refused["code"] == 429 and "--ws-max-subscriptions" in refused["reason"]
        daemon.publish_form("channel=c1&message=still")
        assert next_message(conn)["data"] == "still"


def test_client_publish_is_allowed_by_policy_and_rate_limited(daemon):
    with ws(daemon) as ann, ws(daemon) as bob:
        ask(ann, {"type": "subscribe", "id": 1, "channels": ["chat.1", "news"]})
        ask(bob, {"type": "subscribe", "id": 1, "channels": ["chat.*"]})
        stream = SSEClient(daemon.port, "channels=chat.1")
        published = ask(ann, {"type": "publish", "id": 2, "channel": "chat.1",
                              "data": {"text": "hi"}, "event": "said"})
        if published["type"] == "event":  # the echo may come first: both are sent
            published, echo = next_message(ann), published
        else:
            echo = next_message(ann)
        assert published["type"] == "published" and published["id"] == 2
        assert published["subscribers"] == 3 and published["eventId"]
        received = next_message(bob)
        assert received == echo == {"type": "event", "channel": "chat.1",
                                    "id": published["eventId"], "event": "said",
                                    "data": '{"text":"hi"}'}
        assert stream.events(1)[0]["data"] == '{"text":"hi"}'  # SSE readers get it too
        # refused: no +publish in its policy; not subscribed; bad fields; too fast
        refusals = [ask(ann, m) for m in (
            {"type": "publish", "id": 3, "channel": "news", "data": "x"},
            {"type": "publish", "id": 4, "channel": "chat.2", "data": "x"},
            {"type": "publish", "id": 5, "channel": "chat.1", "data": "x",
             "event": "history-gap"},
            {"type": "publish", "id": 6, "channel": "bad channel", "data": "x"},
            {"type": "publish", "id": 7, "channel": "chat.1"},
        )]
        assert [(r["id"], r["code"]) for r in refusals] == \
            [(3, 403), (4, 403), (5, 400), (6, 400), (7, 400)]
        assert "+publish" in refusals[0]["reason"] and "subscribe" in refusals[1]["reason"]
        # --ws-publish-rate=1: a burst of 2 per connection, then 429
        for n in (8, 9, 10):
            bob.send(json.dumps({"type": "publish", "id": n, "channel": "chat.7",
                                 "data": str(n)}))
        got = [next_message(bob) for _ in range(5)]  # 3 answers, 2 events (chat.*)
        answers = {m["id"]: m.get("code", m["type"]) for m in got if m["type"] != "event"}
        assert answers == {8: "published", 9: "published", 10: 429}, got
        assert [m["data"] for m in got if m["type"] == "event"] == ["8", "9"]
        stats = daemon.request("GET", "/stats")[1]
        assert stats["client_publishes"] == 3 and stats["refused_client_publishes"] == 6


def test_client_publishes_are_off_with_a_zero_rate(tmp_path):
    daemon = Daemon(tmp_path, "--default-policy=public+publish", "--ws-publish-rate=0")
    try:
        with ws(daemon) as conn:
            ask(conn, {"type": "subscribe", "id": 1, "channels": ["a"]})
            refused = ask(conn, {"type": "publish", "id": 2, "channel": "a", "data": "x"})
            assert refused["code"] == 403 and "--ws-publish-rate=0" in refused["reason"]
    finally:
        daemon.stop()


def publish_across(a, b, channel, query_a="", query_b="", shared_history=True):
    """A client of daemon ``a`` publishes; a client of daemon ``b`` receives it — with the
    id the publisher was given when the daemons share a (Redis) history; with RabbitMQ
    each daemon's own history numbers it."""
    try:
        with ws(a, query_a) as ann, ws(b, query_b) as bob:
            ask(ann, {"type": "subscribe", "id": 1, "channels": [channel]})
            ask(bob, {"type": "subscribe", "id": 1, "channels": [channel]})
            ann.send(json.dumps({"type": "publish", "id": 2, "channel": channel,
                                 "data": "across"}))
            got = next_message(bob)
            assert (got["channel"], got["data"]) == (channel, "across")
            mine = sorted((next_message(ann) for _ in range(2)), key=lambda m: m["type"])
            assert [m["type"] for m in mine] == ["event", "published"]
            assert mine[1]["eventId"] == mine[0]["id"]
            assert (got["id"] == mine[0]["id"]) is shared_history
    finally:
        a.stop()
        b.stop()


def test_a_client_publish_reaches_another_daemons_clients_through_redis(
        tmp_path, redis_prefix):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    options = ("--policies=chat.*=token+publish", f"--jwt-secret={SECRET}")
    publish_across(redis_daemon(tmp_path / "a", redis_prefix, *options),
                   redis_daemon(tmp_path / "b", redis_prefix, *options), "chat.1",
                   f"?token={token('ann', ['chat.*'])}", f"?token={token('bob', ['chat.*'])}")


def test_a_client_publish_reaches_another_daemons_clients_through_rabbitmq(
        tmp_path, amqp_exchange):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    publish_across(amqp_daemon(tmp_path / "a", amqp_exchange, "--default-policy=public+publish"),
                   amqp_daemon(tmp_path / "b", amqp_exchange, "--default-policy=public+publish"),
                   "room", shared_history=False)


def test_presence_on_one_daemon(daemon):
    with ws(daemon) as ann, ws(daemon) as bob:
        ask(ann, {"type": "subscribe", "id": 1, "channels": ["room.1"]})
        joined = next_message(ann)  # its own join
        assert joined["type"] == "join" and joined["user"] is None
        me = joined["client"]
        subscribed = ask(bob, {"type": "subscribe", "id": 1, "channels": ["room.1"]})
        assert next_message(ann) == {"type": "join", "channel": "room.1",
                                     "client": subscribed["client"], "user": None}
        who = ask(ann, {"type": "presence", "id": 2, "channel": "room.1"})
        assert sorted(c["client"] for c in who["clients"]) == \
            sorted([me, subscribed["client"]])
        refused = ask(ann, {"type": "presence", "id": 3, "channel": "chat.1"})
        assert refused["code"] == 403 and "+presence" in refused["reason"]
        status, answer = daemon.request("GET", "/presence?channel=room.1")  # the backend's
        assert status == 200 and answer["clients"] == who["clients"]
        assert daemon.request("GET", "/presence?channel=chat.1")[0] == 400
    with ws(daemon) as carol:
        ask(carol, {"type": "subscribe", "id": 1, "channels": ["room.1"]})
        mine = next_message(carol)["client"]
        who = ask(carol, {"type": "presence", "id": 2, "channel": "room.1"})
        assert who["clients"] == [{"client": mine, "user": None}]  # the others left
        assert daemon.request("GET", "/stats")[1]["presence"]["members"] == 1


def test_presence_and_join_leave_across_two_daemons_sharing_redis(
        tmp_path, redis_prefix):  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    options = ("--policies=room.*=token+presence", f"--jwt-secret={SECRET}",
               "--http-secret=pub")
    a = redis_daemon(tmp_path / "a", redis_prefix, *options)
    b = redis_daemon(tmp_path / "b", redis_prefix, *options)
    try:
        for daemon in (a, b):  # (possibly logged before the lines redis_daemon awaits)
            if not any("redis presence pubsub connection" in line for line in daemon.log):
                daemon.wait_for("redis presence pubsub connection .* is up")
        with ws(a, f"?token={token('ann', ['room.*'])}") as ann:
            ask(ann, {"type": "subscribe", "id": 1, "channels": ["room.1"]})
            assert next_message(ann)["user"] == "ann"
            with ws(b, f"?token={token('bob', ['room.*'])}") as bob:
                answer = ask(bob, {"type": "subscribe", "id": 1, "channels": ["room.1"]})
                assert answer["type"] == "subscribed"
                assert next_message(ann) == {"type": "join", "channel": "room.1",
                                             "client": answer["client"], "user": "bob"}
                assert next_message(bob)["user"] == "bob"  # its own join, from Redis
                who = ask(bob, {"type": "presence", "id": 2, "channel": "room.1"})
                assert sorted(c["user"] for c in who["clients"]) == ["ann", "bob"]
                # the backend asks either daemon, with the publish key
                assert a.request("GET", "/presence?channel=room.1")[0] == 401
                status, answer = a.request("GET", "/presence?channel=room.1", None,
                                           {"Authorization": "Bearer pub"})
                assert status == 200 and answer["clients"] == who["clients"]
            left = next_message(ann)  # bob closed on daemon b
            assert (left["type"], left["user"]) == ("leave", "bob")
            b.proc.send_signal(signal.SIGTERM)  # a daemon that stops says leave too
            b.stop(signalled=True)
            who = ask(ann, {"type": "presence", "id": 3, "channel": "room.1"})
            assert [c["user"] for c in who["clients"]] == ["ann"]
    finally:
        a.stop()
        if b.proc.returncode is None:
            b.stop()


def test_resume_across_a_daemon_restart_with_redis_history(tmp_path, redis_prefix):  # noqa: F811
    first = redis_daemon(tmp_path, redis_prefix)
    with ws(first) as conn:
        ask(conn, {"type": "subscribe", "id": 1, "channels": ["a", "b"]})
        first.publish_form("channel=a&message=seen")
        last = next_message(conn)["id"]
        first.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=DEADLINE)
    first.stop(signalled=True)
    second = redis_daemon(tmp_path, redis_prefix)  # the same Redis: the same history
    try:
        for n in range(3):
            second.publish_form(f"channel={'ab'[n % 2]}&message=missed+{n}")
        with ws(second) as conn:
            answer = ask(conn, {"type": "subscribe", "id": 1, "channels": ["a", "b"],
                                "lastEventId": last})
            assert answer["lastEventId"] == last
            replayed = [next_message(conn) for _ in range(3)]
            assert [e["data"] for e in replayed] == ["missed 0", "missed 1", "missed 2"]
            second.publish_form("channel=b&message=live")
            assert next_message(conn)["data"] == "live"  # once: nothing repeated
            assert ask(conn, {"type": "ping", "id": 2}) == {"type": "pong", "id": 2}
    finally:
        second.stop()


def test_an_expiring_token_ends_its_subscription_not_the_connection(tmp_path):
    daemon = Daemon(tmp_path, "--policies=s.*=token", f"--jwt-secret={SECRET}",
                    "--http-secret=pub")
    try:
        with ws(daemon) as conn:
            ask(conn, {"type": "subscribe", "id": 1, "channels": ["s.1"],
                       "token": token("ann", ["s.*"], seconds=2)})
            ask(conn, {"type": "subscribe", "id": 2, "channels": ["open"]})
            daemon.publish_form("channel=s.1&message=before&key=pub")
            before = next_message(conn)
            expired = next_message(conn)  # at exp, within DEADLINE
            assert expired == {"type": "token-expired", "channels": ["s.1"],
                               "lastEventId": before["id"]}
            daemon.publish_form("channel=s.1&message=after&key=pub")
            daemon.publish_form("channel=open&message=still&key=pub")
            assert next_message(conn)["data"] == "still"  # s.1 no more; the rest stays
    finally:
        daemon.stop()


def test_permessage_deflate_is_off_unless_asked_for(tmp_path):
    (tmp_path / "plain").mkdir()
    plain = Daemon(tmp_path / "plain")
    try:
        with connect(f"ws://127.0.0.1:{plain.port}/", open_timeout=DEADLINE) as conn:
            assert "Sec-WebSocket-Extensions" not in conn.response.headers
    finally:
        plain.stop()
    (tmp_path / "deflate").mkdir()
    deflating = Daemon(tmp_path / "deflate", "--ws-deflate=1")
    try:  # the websockets client offers permessage-deflate by default
        with connect(f"ws://127.0.0.1:{deflating.port}/", open_timeout=DEADLINE) as conn:
            assert "permessage-deflate" in conn.response.headers["Sec-WebSocket-Extensions"]
            ask(conn, {"type": "subscribe", "id": 1, "channels": ["a"]})
            deflating.publish_form("channel=a&message=" + "z" * 5000)
            assert next_message(conn)["data"] == "z" * 5000
    finally:
        deflating.stop()
