"""POST /publish, /stats and malformed input — driven in memory."""

import json

import pytest

from tests.memory import (
    Connection,
    app_with_own_handlers,
    instances_of,
    make_app,
    publish,
    publish_form,
    subscribe,
)


def test_original_form_fields_still_publish():
    app = make_app()
    conn = subscribe(app, "channels=base")
    status, body = publish_form(app, "message=%5B123%2C+124%5D&channel=base")
    assert status == 200 and body["status"] == "ok"
    assert body["subscribers"] == 1 and body["events"][0]["channel"] == "base"
    assert [e["data"] for e in conn.events()] == ["[123, 124]"]
    assert conn.events()[0]["id"] == body["events"][0]["id"]


def test_form_channel_is_repeatable_and_each_channel_gets_an_id():
    app = make_app()
    a, b = subscribe(app, "channels=a"), subscribe(app, "channels=b")
    status, body = publish_form(app, "message=hi&channel=a&channel=b")
    assert status == 200 and body["subscribers"] == 2
    assert len({e["id"] for e in body["events"]}) == 2
    assert a.events()[0]["data"] == b.events()[0]["data"] == "hi"


def test_json_body_with_channels_list_event_name_and_object_data():
    app = make_app()
    conn = subscribe(app, "channels=x,y")
    status, body = publish(app, channels=["x", "y"], data={"n": 1}, event="tick")
    assert status == 200 and [e["channel"] for e in body["events"]] == ["x", "y"]
    assert [(e["event"], e["data"]) for e in conn.events()] == [
        ("tick", '{"n":1}'), ("tick", '{"n":1}')]


def test_a_message_to_an_empty_channel_is_kept_for_replay():
    app = make_app()
    before = subscribe(app, "channels=lonely")
    resume = [line for line in before.raw.decode().split("\n") if line.startswith("id:")][-1][4:]
    before.close()
    status, body = publish(app, channel="lonely", data="anyone?")
    assert status == 200 and body["subscribers"] == 0
    later = subscribe(app, "channels=lonely", {"Last-Event-Id": resume})
    assert [e["data"] for e in later.events()] == ["anyone?"]


def test_a_retried_publish_with_the_same_id_is_delivered_once():
    app = make_app()
    conn = subscribe(app, "channels=a")
    first = publish(app, channel="a", data="x", id="order-42")[1]
    again = publish(app, channel="a", data="x", id="order-42")[1]
    assert again["events"][0]["duplicate"] is True
    assert again["events"][0]["id"] == first["events"][0]["id"]
    assert len(conn.events()) == 1


class TestKey:
    def test_wrong_or_missing_key_is_401(self):
        app = make_app(http_secret="s3cret")
        assert publish_form(app, "message=x&channel=a")[0] == 401
        assert publish_form(app, "message=x&channel=a&key=nope")[0] == 401
        assert publish(app, channel="a", data="x", key="nope")[0] == 401

    def test_right_key_in_field_json_or_bearer_header(self):
        app = make_app(http_secret="s3cret")
        assert publish_form(app, "message=x&channel=a&key=s3cret")[0] == 200
        assert publish(app, channel="a", data="x", key="s3cret")[0] == 200
        conn = Connection(app).send("POST", "/publish", b'{"channel":"a","data":"x"}', {
            "Content-Type": "application/json", "Authorization": "Bearer s3cret"})
        assert conn.json()[0] == 200


@pytest.mark.parametrize("body,field", [
    ({"data": "x"}, "channel"),
    ({"channel": "a"}, "data"),
    ({"channel": "a*", "data": "x"}, "channel"),
    ({"channel": "has space", "data": "x"}, "channel"),
    ({"channel": 5, "data": "x"}, "channel"),
    ({"channel": "a", "data": "x", "event": "bad\nname"}, "event"),
    ({"channel": "a", "data": "x", "event": "history-gap"}, "event"),
    ({"channel": "a", "data": "x", "id": "i" * 201}, "id"),
    ({"channel": "a", "data": "x", "event": 3}, "event"),
])
def test_invalid_fields_are_named_in_a_400(body, field):
    app = make_app()
    status, answer = publish(app, **body)
    assert status == 400 and answer["field"] == field, answer


def test_form_without_message_is_400():
    status, answer = publish_form(make_app(), "channel=a")
    assert status == 400 and answer["field"] == "message"


@pytest.mark.parametrize("raw", [b"{not json", b'"a string"', b"\xff\xfe{}",
                                 b'{"channel":"a","data":"\\ud800"}'])
def test_broken_json_or_utf8_is_400(raw):
    app = make_app()
    status, answer = Connection(app).send("POST", "/publish", raw, {
        "Content-Type": "application/json"}).json()
    assert status == 400 and "error" in answer


def test_broken_utf8_in_a_form_is_400_and_the_daemon_keeps_serving():
    app = make_app()
    status, answer = Connection(app).send("POST", "/publish", b"message=\xff&channel=a", {
        "Content-Type": "application/x-www-form-urlencoded"}).json()
    assert status == 400 and "UTF-8" in answer["error"]
    assert publish(app, channel="a", data="still fine")[0] == 200


def test_oversized_body_is_413_before_it_is_read():
    app = make_app(max_body=100)
    conn = Connection(app)
    conn.protocol.dataReceived(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n"
                               b"Content-Type: application/json\r\n\r\n")
    status, answer = conn.json()
    assert status == 413 and "100 bytes" in answer["error"]
    assert conn.transport.disconnecting


def test_chunked_request_bodies_are_411():
    conn = Connection(make_app())
    conn.protocol.dataReceived(b"POST /publish HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n")
    assert conn.json()[0] == 411


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: x\r\nX: \xff\r\n\r\n"])
def test_malformed_requests_get_400_not_silence(raw):
    conn = Connection(make_app())
    conn.protocol.dataReceived(raw)
    assert conn.json()[0] == 400


def test_overlong_header_line_is_431():
    conn = Connection(make_app())
    conn.protocol.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert conn.json()[0] == 431


def test_unknown_url_is_a_json_404():
    status, answer = Connection(make_app()).send("GET", "/nope").json()
    assert status == 404 and "/publish" in answer["error"]


def test_stats_reports_channels_counters_and_the_original_list():
    app = make_app()
    subscribe(app, "channels=cats,general")
    subscribe(app, "channels=dogs,general")
    publish(app, channel="general", data="x")
    status, stats = Connection(app).send("GET", "/stats").json()
    assert status == 200
    assert stats["connections"] == 2 and stats["channels"] == 3
    assert stats["subscriptions"] == [["cats", 1], ["dogs", 1], ["general", 2]]
    assert stats["events_published"] == 1 and stats["deliveries"] == 2
    assert stats["broker"] == {"name": "http", "connected": True}
    assert stats["uptime"] >= 0
    status, pairs = Connection(app).send("GET", "/stats/channels").json()
    assert pairs == [["cats", 1], ["dogs", 1], ["general", 2]]
    assert json.dumps(pairs)  # plain JSON list, as in 2013


def test_prometheus_metrics():
    app = make_app()
    subscribe(app, "channels=cats,general")
    publish(app, channel="general", data="x")
    conn = Connection(app).send("GET", "/metrics")
    status, headers, body = conn.head_and_body()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(body.decode().splitlines())
    for expected in ('cyclone_sse_channel_subscribers{channel="cats"} 1.0',
                     'cyclone_sse_channel_subscribers{channel="general"} 1.0',
                     "cyclone_sse_connections 1.0",
                     "cyclone_sse_events_published_total 1.0",
                     "cyclone_sse_deliveries_total 1.0",
                     "cyclone_sse_connections_accepted_total 1.0",
                     "cyclone_sse_broker_connected 1.0"):
        assert expected in lines, expected


def post_json(app, value, headers=None):
    answer = Connection(app).send("POST", "/publish", json.dumps(value).encode(), {
        "Content-Type": "application/json", **(headers or {})}).json()
    app.clock.advance(0)
    return answer


def test_a_batch_publishes_every_event_in_order_with_one_answer():
    app = make_app(max_batch=3)
    conn = subscribe(app, "channels=a,b")
    status, body = post_json(app, [{"channel": "a", "data": "1"},
                                   {"channels": ["a", "b"], "data": {"n": 2}, "event": "e"},
                                   {"channel": "b", "data": "3", "id": "mine"}])
    assert status == 200 and [e["channel"] for e in body["events"]] == ["a", "a", "b", "b"]
    assert [(e["event"], e["data"]) for e in conn.events()] == [
        ("message", "1"), ("e", '{"n":2}'), ("e", '{"n":2}'), ("message", "3")]
    assert [e["id"] for e in conn.events()] == [e["id"] for e in body["events"]]
    for bad, field in (([], "body"), ([{"channel": "a", "data": "x"}] * 4, "body"),
                       ([{"channel": "a", "data": "x"}, {"channel": "bad channel",
                                                         "data": "y"}], "channel"),
                       ([{"channel": "a", "data": "x", "key": "k"}], "key"), ([1], "body")):
        status, body = post_json(app, bad)
        assert status == 400 and body["field"] == field, bad
    assert len(conn.events()) == 4  # a refused batch publishes none of its events


def test_the_written_out_answer_is_the_json_answer_byte_for_byte():
    from cyclone_sse.brokers.base import Published
    from cyclone_sse.event import dumps
    from cyclone_sse.handlers.publish import _answer_value
    results = [Published("a", "3f2a1c-1", 2), Published("news.sport:x@y/z=+#_-", "e-22", 0,
                                                       duplicate=True)]
    for some in ([results[0]], [results[1]], results):
        assert Published.answer_of(some) == dumps(_answer_value(some))
        assert json.loads(Published.answer_of(some))["subscribers"] == sum(
            r.subscribers for r in some)
    for one in results:
        assert one.answer() == dumps(_answer_value(one)) == Published.answer_of([one])


def test_a_batch_needs_the_key_in_the_header():
    app = make_app(http_secret="k")
    assert post_json(app, [{"channel": "a", "data": "x"}])[0] == 401
    status, _ = post_json(app, [{"channel": "a", "data": "x"}], {"Authorization": "Bearer k"})
    assert status == 200


def test_a_publish_takes_one_path_whatever_the_options():
    """``POST /publish`` on the stock route is answered by the lean path, with or
    without --access-log, refusals included (no cyclone handler is built, nothing is
    parsed twice); an --app's own ``PublishHandler`` subclass is cyclone's, and both
    answer alike, headers included."""
    from cyclone_sse.handlers.publish import PublishHandler

    def answer(app, body, headers):
        connection = Connection(app).send("POST", "/publish", body, headers)
        app.clock.advance(0)  # (the answer follows the fan-out at the end of the turn)
        head, _, payload = connection.raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        fields = sorted(line for line in lines[1:] if not line.startswith("Date:"))
        return lines[0], fields, json.loads(payload)

    with instances_of(PublishHandler) as built:
        for options in ({}, {"cors_origin": "https://a.example", "http_secret": "k"}):
            lean, logged = make_app(**options), make_app(access_log=True, **options)
            own = app_with_own_handlers(lean.clock, **options)
            for body, headers in PUBLISHES:
                headers = {**headers, "Origin": "https://a.example"}
                answers = [answer(app, body, headers) for app in (lean, logged, own)]
                for _, _, value in answers:  # ids differ between the apps
                    for event in value.get("events", []):
                        event["id"] = "-"
                assert answers[0] == answers[1] == answers[2], body
            assert ("POST", "/publish") in lean.routes and ("POST", "/publish") in logged.routes
            assert ("POST", "/publish") not in own.routes
    assert len(built) == 2 * len(PUBLISHES)  # the --app's, and only them


PUBLISHES = (
    (b'{"channel": "a", "data": "x"}', {"Content-Type": "application/json"}),
    (b"channel=a&message=x&key=k", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b'[{"channel": "a", "data": 1}, {"channel": "b", "data": 2}]',
     {"Content-Type": "application/json", "Authorization": "Bearer k"}),
    (b'{"channel": "bad channel", "data": "x"}', {"Content-Type": "application/json"}),
    (b"channel=a&message=x&key=wrong", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b'{"channel": "a", "data": "x", "event": "history-gap"}',
     {"Content-Type": "application/json", "Authorization": "Bearer k"}),
)


def test_the_access_log_has_a_line_per_publish_on_the_one_path():
    from twisted.logger import formatEvent, globalLogPublisher
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        app = make_app(access_log=True, http_secret="s3cret")
        for key in ("s3cret", "wrong", "s3cret"):
            Connection(app).send("POST", "/publish?token=t0ken", f"channel=a&message=x&"
                                 f"key={key}".encode(), {
                                     "Content-Type": "application/x-www-form-urlencoded"})
        app.clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [formatEvent(e) for e in seen]
    access = [line for line in lines if "POST /publish" in line and "ms" in line]
    assert [line.split()[0] for line in access] == ["200", "401", "200"], lines
    assert all("token=***" in line and "t0ken" not in line for line in access)
    assert "s3cret" not in "\n".join(lines)


def test_a_publish_the_broker_fails_is_answered_on_the_lean_path():
    from twisted.internet import defer

    from cyclone_sse.errors import BrokerUnavailable
    def refuse(*args):
        raise BrokerUnavailable("not published, retry")

    for immediate in (True, False):  # (published in place, or through a Deferred)
        app = make_app()
        if immediate:
            app.broker.publish_now = refuse
        else:
            app.history.synchronous = False
            app.broker.publish = lambda *args: defer.maybeDeferred(refuse)
        raw = Connection(app).send("POST", "/publish", b'{"channel": "a", "data": "x"}',
                                   {"Content-Type": "application/json"}).raw
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body) == {
            "error": "not published, retry", "status": 503}
