"""GET /: SSE streams, replay, heartbeats, long-poll — driven in memory."""

import json

from cyclone_sse.event import parse_stream
from tests.memory import (
    Connection,
    app_with_own_handlers,
    instances_of,
    make_app,
    publish,
    subscribe,
)


def test_stream_headers_are_sent_at_once():
    app = make_app()
    conn = subscribe(app, "channels=a")
    status, headers, body = conn.head_and_body()
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["x-accel-buffering"] == "no"
    assert body.startswith(b"retry: 3000\n\n")
    # a quiet stream still gets a resume point, as an event every client records
    retry, position = parse_stream(body.decode())
    assert retry == {"retry": "3000"} and position["event"] == "stream-open"
    assert json.loads(position["data"]) == {"lastEventId": position["id"]}
    assert "etag" not in headers


def test_no_channel_is_a_readable_400():
    app = make_app()
    status, body = Connection(app).send("GET", "/").json()
    assert status == 400 and body["field"] == "channels" and "channels=" in body["error"]


def test_bad_channel_names_are_refused():
    app = make_app()
    for query in ("channels=a%20b", "channels=" + "x" * 201, "channels=%FF"):
        status, body = subscribe(app, query).json()
        assert status == 400, query
        assert "error" in body


def test_too_many_channels_are_refused():
    app = make_app(max_channels=2)
    status, body = subscribe(app, "channels=a,b,c").json()
    assert status == 400 and "too many" in body["error"]


def test_published_events_reach_every_channel_subscriber_in_order():
    app = make_app()
    ab = subscribe(app, "channels=a&channels=b")
    comma = subscribe(app, "channels=a,b")
    only_b = subscribe(app, "channels=b")
    publish(app, channel="a", data="one")
    publish(app, channel="b", data="two\nlines", event="update")
    for conn in (ab, comma):
        assert [(e["event"], e["data"]) for e in conn.events()] == [
            ("message", "one"), ("update", "two\nlines")]
    assert [e["data"] for e in only_b.events()] == ["two\nlines"]


def test_heartbeat_comments_keep_idle_streams_open():
    app = make_app(heartbeat=5)
    conn = subscribe(app, "channels=a")
    before = conn.raw
    app.clock.advance(5)
    assert conn.raw == before + b":\n\n"
    no_beat = make_app(heartbeat=0)
    quiet = subscribe(no_beat, "channels=a")
    before = quiet.raw
    no_beat.clock.advance(60)
    assert quiet.raw == before


def test_reconnect_with_last_event_id_gets_exactly_what_it_missed():
    app = make_app()
    first = subscribe(app, "channels=a&channels=b")
    publish(app, channel="a", data="1")
    seen = first.events()[-1]["id"]
    first.close()
    publish(app, channel="b", data="2")
    publish(app, channel="other", data="not mine")
    publish(app, channel="a", data="3")
    again = subscribe(app, "channels=a,b", {"Last-Event-Id": seen})
    publish(app, channel="b", data="4")
    assert [e["data"] for e in again.events()] == ["2", "3", "4"]
    ids = [e["id"] for e in again.events()]
    assert len(set(ids)) == 4 - 1
    by_query = subscribe(app, f"channels=a,b&lastEventId={seen}")
    assert [e["data"] for e in by_query.events()] == ["2", "3", "4"]
    stats = app.stats()
    assert stats["replays"] == 2 and stats["replayed_events"] == 2 + 3


def test_a_quiet_stream_resumes_from_its_connection_time():
    app = make_app()
    first = subscribe(app, "channels=a")
    resume_id = [line for line in first.raw.decode().split("\n") if line.startswith("id: ")][-1][4:]
    first.close()
    publish(app, channel="a", data="while away")
    again = subscribe(app, "channels=a", {"Last-Event-Id": resume_id})
    assert [e["data"] for e in again.events()] == ["while away"]


def test_an_unknown_id_is_signalled_before_the_replay():
    app = make_app()
    publish(app, channel="a", data="kept")
    conn = subscribe(app, "channels=a", {"Last-Event-Id": "from-another-life-7"})
    events = conn.events()
    assert events[0]["event"] == "history-gap"
    assert json.loads(events[0]["data"]) == {"reason": "unknown",
                                             "lastEventId": "from-another-life-7"}
    assert [e["data"] for e in events[1:]] == ["kept"]


def test_an_expired_id_is_signalled():
    app = make_app(history_size=2)
    _, answer = publish(app, channel="a", data="1")
    for n in "234":
        publish(app, channel="a", data=n)
    conn = subscribe(app, "channels=a", {"Last-Event-Id": answer["events"][0]["id"]})
    events = conn.events()
    assert json.loads(events[0]["data"])["reason"] == "expired"
    assert [e["data"] for e in events[1:]] == ["3", "4"]
    assert app.stats()["replay_gaps"] == 1


def test_pattern_subscriptions():
    app = make_app()
    conn = subscribe(app, "channels=news.*")
    publish(app, channel="news.sport", data="goal")
    publish(app, channel="weather", data="rain")
    assert [e["data"] for e in conn.events()] == ["goal"]


def test_closing_the_connection_unsubscribes():
    app = make_app()
    conn = subscribe(app, "channels=a")
    assert app.registry.connections == 1
    conn.close()
    assert app.registry.connections == 0
    assert publish(app, channel="a", data="x")[1]["subscribers"] == 0


def test_a_slow_client_is_cut_off_and_others_keep_receiving():
    app = make_app(max_pending=1000)
    slow = subscribe(app, "channels=a")
    fast = subscribe(app, "channels=a")
    slow.transport.producer.pauseProducing()  # what Twisted does when its buffer is full
    for n in range(20):
        publish(app, channel="a", data="x" * 100 + str(n))
    assert slow.transport.disconnecting
    assert app.stats()["slow_disconnects"] == 1
    assert len(fast.events()) == 20 and not fast.transport.disconnecting


def test_shutdown_closes_open_streams():
    app = make_app()
    conns = [subscribe(app, "channels=a") for _ in range(3)]
    d = app.stop()
    assert all(c.transport.disconnecting for c in conns)
    fired = []
    d.addCallback(fired.append)
    conns[0].close()
    conns[1].close()
    assert not fired  # waits for every stream to go
    conns[2].close()
    assert fired
    stuck = make_app()
    subscribe(stuck, "channels=a")
    gave_up = []
    stuck.stop().addCallback(gave_up.append)
    stuck.clock.advance(2)  # SHUTDOWN_GRACE: a client that never closes cannot hold us
    assert gave_up


def test_cors_origin_list_echoes_allowed_origins_only():
    app = make_app(cors_origin="https://a.example, https://b.example")
    ok = subscribe(app, "channels=a", {"Origin": "https://b.example"})
    _, headers, _ = ok.head_and_body()
    assert headers["access-control-allow-origin"] == "https://b.example"
    assert headers["access-control-allow-credentials"] == "true"
    other = subscribe(app, "channels=a", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.head_and_body()[1]


def test_preflight_allows_last_event_id():
    app = make_app()
    status, headers, _ = Connection(app).send("OPTIONS", "/?channels=a").head_and_body()
    assert status == 204
    assert "Last-Event-Id" in headers["access-control-allow-headers"]


class TestLongPoll:
    def poll(self, app, query="channels=a", headers=None):
        headers = {"X-Requested-With": "XMLHttpRequest", "Accept": "application/json",
                   **(headers or {})}
        return subscribe(app, query, headers)

    def test_held_until_an_event_then_answered_as_json(self):
        app = make_app()
        conn = self.poll(app)
        assert conn.raw == b""
        for data in ("one", "two"):  # two publishes in the same reactor turn
            Connection(app).send("POST", "/publish", f"channel=a&message={data}".encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        assert conn.raw == b""
        app.clock.advance(0)  # events of the same reactor turn go out together
        status, body = conn.json()
        assert status == 200
        assert [e["data"] for e in body["events"]] == ["one", "two"]
        assert body["lastEventId"] == body["events"][-1]["id"]
        assert app.registry.connections == 0

    def test_timeout_answers_empty_with_a_resume_point(self):
        app = make_app(poll_timeout=10)
        conn = subscribe(app, "channels=a&transport=poll")
        app.clock.advance(9)
        assert conn.raw == b""
        app.clock.advance(1)
        status, body = conn.json()
        assert status == 200 and body["events"] == [] and body["lastEventId"]

    def test_a_poll_loop_misses_nothing_published_between_polls(self):
        app = make_app(poll_timeout=10)
        first = self.poll(app)
        app.clock.advance(10)
        last = first.json()[1]["lastEventId"]
        publish(app, channel="a", data="between polls 1")
        publish(app, channel="a", data="between polls 2")
        second = self.poll(app, headers={"Last-Event-Id": last})
        body = second.json()[1]
        assert [e["data"] for e in body["events"]] == ["between polls 1", "between polls 2"]
        third = self.poll(app, f"channels=a&lastEventId={body['lastEventId']}")
        assert third.raw == b""
        publish(app, channel="a", data="live")
        app.clock.advance(0)
        assert [e["data"] for e in third.json()[1]["events"]] == ["live"]

    def test_a_client_gone_before_the_answer_is_forgotten(self):
        app = make_app()
        conn = self.poll(app)
        conn.close()
        assert app.registry.connections == 0
        publish(app, channel="a", data="x")
        app.clock.advance(30)
        assert conn.raw == b""

    def test_gap_is_reported_in_the_answer(self):
        app = make_app()
        publish(app, channel="a", data="x")
        body = self.poll(app, headers={"Last-Event-Id": "bogus"}).json()[1]
        assert body["gap"] == "unknown" and [e["data"] for e in body["events"]] == ["x"]


def test_an_event_replayed_and_fanned_out_in_the_same_turn_arrives_once():
    app = make_app()
    _, answer = publish(app, channel="a", data="seen")
    seen = answer["events"][0]["id"]
    # published, but its fan-out waits for the end of this reactor turn...
    Connection(app).send("POST", "/publish", b"channel=a&message=new", {
        "Content-Type": "application/x-www-form-urlencoded"})
    # ...when a client resumes: its replay already contains the new event
    conn = subscribe(app, "channels=a", {"Last-Event-Id": seen})
    fresh = subscribe(app, "channels=a")  # no id: gets what is fanned out from now on
    app.clock.advance(0)
    assert [e["data"] for e in conn.events()] == ["new"]
    publish(app, channel="a", data="later")
    assert [e["data"] for e in conn.events()] == ["new", "later"]
    assert [e["data"] for e in fresh.events()] == ["new", "later"]


class TestLongPollAsEventStream:
    """What the 2013 jquery.eventsource.js polyfill does: an XHR (``X-Requested-With``
    on the same origin; only jQuery's ``_=`` cache-buster across origins) with
    ``Accept: */*``, reading the answer as event-stream text, then polling again with
    ``Last-Event-Id``."""

    HEADERS = {"X-Requested-With": "XMLHttpRequest", "Accept": "*/*"}

    def test_answered_as_event_stream_text_and_never_cacheable(self):
        app = make_app()
        conn = subscribe(app, "channels=a&_=1700000000000", self.HEADERS)
        publish(app, channel="a", data="line 1\r\nline 2")
        app.clock.advance(0)
        status, headers, body = conn.head_and_body()
        assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "etag" not in headers and headers["cache-control"] == "no-store"
        retry, event = parse_stream(body.decode())
        assert retry == {"retry": "3000"}
        assert event["data"] == "line 1\nline 2"  # as EventSource and JSON polls give it
        # revalidating gets the same answer, never a 304
        again = subscribe(app, "channels=a", {**self.HEADERS, "If-None-Match": "*",
                                               "Last-Event-Id": "nope"})
        assert again.head_and_body()[0] == 200

    def test_across_origins_the_cache_buster_is_enough_and_nothing_is_lost(self):
        app = make_app(poll_timeout=10)
        first = subscribe(app, "channels=a&_=1", {"Accept": "*/*", "Origin": "http://x"})
        app.clock.advance(10)
        blocks = list(parse_stream(first.head_and_body()[2].decode()))
        position = blocks[-1]
        assert position["event"] == "stream-open"  # a resume point, though no event
        publish(app, channel="a", data="between polls")
        second = subscribe(app, "channels=a&_=2", {"Accept": "*/*",
                                                    "Last-Event-Id": position["id"]})
        assert [e["data"] for e in second.events()] == ["between polls"]
        # an EventSource (Accept: text/event-stream) with the same argument streams
        stream = subscribe(app, "channels=a&_=3", {"Accept": "text/event-stream"})
        publish(app, channel="a", data="live")
        assert [e["data"] for e in stream.events()] == ["live"]
        assert b"Content-Length" not in stream.raw.split(b"\r\n\r\n")[0]

    def test_a_gap_is_signalled_in_the_text_too(self):
        app = make_app()
        publish(app, channel="a", data="x")
        conn = subscribe(app, "channels=a", {**self.HEADERS, "Last-Event-Id": "bogus"})
        blocks = [b for b in parse_stream(conn.head_and_body()[2].decode()) if "data" in b]
        assert [b["event"] for b in blocks] == ["history-gap", "message"]
        assert json.loads(blocks[0]["data"])["reason"] == "unknown"


def test_channel_aware_events_name_the_channel_on_streams_and_polls():
    app = make_app()
    stream = subscribe(app, "channels=a,b&channelEvents=1")
    plain = subscribe(app, "channels=a,b")
    poll = subscribe(app, "channels=a,b&channelEvents=1",
                     {"X-Requested-With": "XMLHttpRequest"})
    publish(app, channel="a", data="1")
    publish(app, channel="b", data="2", event="score")
    app.clock.advance(0)
    assert [(e["event"], e["data"]) for e in stream.events()] == [
        ("channel", "a"), ("message", "1"), ("channel", "b"), ("score", "2")]
    assert [(e["event"], e["data"]) for e in plain.events()] == [
        ("message", "1"), ("score", "2")]
    assert [(e["event"], e["data"]) for e in poll.events()] == [
        ("channel", "a"), ("message", "1")]
    # publishers cannot forge it
    assert publish(app, channel="a", data="x", event="channel")[0] == 400


def test_a_stream_takes_one_path_whatever_the_options():
    """An EventSource request on the stock route skips cyclone's handler machinery
    (connection.py), its refusals and --access-log included; an --app's own
    ``SubscribeHandler`` subclass is cyclone's.  Both answer the same, head and first
    bytes."""
    import jwt

    from cyclone_sse.handlers.subscribe import SubscribeHandler

    secret = "s" * 32
    token = jwt.encode({"sub": "42", "channels": ["t.*"], "exp": 4_000_000_000}, secret)
    options = {"policies": "t.*=token", "jwt_secret": secret, "http_secret": "k",
               "cors_origin": "https://a.example"}
    cases = [("channels=a", {}), ("channels=a,b*&channelEvents=1", {}),
             (f"channels=t.1&token={token}", {}), ("channels=t.1", {}),
             ("channels=t.1", {"Cookie": f"x=1; cyclone_sse_token={token}"}),
             ("channels=bad%20name", {}), ("channels=a", {"Origin": "https://a.example"}),
             ("channels=notify%2342", {"Authorization": f"Bearer {token}"})]

    def opened(app, query, headers):
        conn = Connection(app).send("GET", "/?" + query, headers={
            "Accept": "text/event-stream", **headers})
        head, _, body = conn.raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        fields = sorted(line for line in lines[1:] if not line.startswith("Date:"))
        events = [{k: ("-" if k == "id" or e.get("event") == "stream-open" else v)
                   for k, v in e.items()} for e in parse_stream(body.decode())] \
            if lines[0].endswith("200 OK") else json.loads(body)  # (ids differ)
        return lines[0], fields, events, conn

    with instances_of(SubscribeHandler) as built:
        lean, logged = make_app(**options), make_app(access_log=True, **options)
        handled = app_with_own_handlers(lean.clock, **options)
        for query, headers in cases:
            *mine, lean_conn = opened(lean, query, headers)
            *logged_answer, _ = opened(logged, query, headers)
            *theirs, _ = opened(handled, query, headers)
            assert mine == logged_answer == theirs, query
        # the lean apps built no handler: refusals are answered on their own path
        assert len(built) == len(cases)  # (the --app's, and only them)
        publish(lean, channel="notify#42", data="live", key="k")  # a live stream
        assert any(e.get("data") == "live" for e in parse_stream(
            lean_conn.raw.partition(b"\r\n\r\n")[2].decode()))
        assert lean.registry.connections == len(cases) - 2
        lean_conn.transport.loseConnection()
        lean_conn.protocol.connectionLost(None)
        assert lean.registry.connections == len(cases) - 3  # its close ended it


def test_the_access_log_has_a_line_per_stream_refusal_and_upgrade_on_the_one_path():
    from twisted.logger import formatEvent, globalLogPublisher
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        app = make_app(access_log=True)
        sse = {"Accept": "text/event-stream"}
        stream = subscribe(app, "channels=a&lastEventId=s3cret.t0ken", sse)
        stream.close()  # (a stream's line is written when it ends)
        subscribe(app, "channels=bad%20name", sse)
        Connection(app).send("GET", "/", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [formatEvent(e) for e in seen]
    access = [line.split()[0] for line in lines if " GET /" in line and "ms" in line]
    assert access == ["200", "400", "101"], lines


def test_a_long_poll_takes_the_one_path_and_answers_as_an_apps_handler_does():
    """Long-polls too are answered on the stock route's lean path (no cyclone handler),
    as JSON or as event-stream text, exactly as an --app's own handler (cyclone's)."""
    from cyclone_sse.handlers.subscribe import SubscribeHandler

    lean = make_app(cors_origin="https://a.example")
    own = app_with_own_handlers(lean.clock, cors_origin="https://a.example")
    for query, headers in (("channels=a&transport=poll", {}),
                           ("channels=a&_=1", {"X-Requested-With": "XMLHttpRequest"}),
                           ("channels=a&transport=poll", {"Origin": "https://a.example"}),
                           ("channels=a&transport=poll&lastEventId=nonsense", {})):
        answers = []
        for app in (lean, own):
            with instances_of(SubscribeHandler) as built:
                conn = Connection(app).send("GET", "/?" + query, headers=headers)
            assert len(built) == (app is own)
            publish(app, channel="a", data="polled")
            head, _, body = conn.raw.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            fields = sorted(line for line in lines[1:] if not line.startswith("Date:"))
            assert b"polled" in body or lines[0].startswith("HTTP/1.1 4"), body
            answers.append((lines[0], fields))
        assert answers[0] == answers[1], query
    # a poll waiting when its client leaves is forgotten
    waiting = Connection(lean).send("GET", "/?channels=b&transport=poll")
    assert lean.registry.connections >= 1
    before = lean.registry.connections
    waiting.close()
    assert lean.registry.connections == before - 1
