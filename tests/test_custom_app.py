"""The --app example in extras/ works as documented."""

from twisted.internet.task import Clock

from extras.custom_app import App, token_for
from tests.memory import Connection, publish, subscribe


def make():
    app = App({"http-secret": "s3cret"}, reactor=Clock())
    app.start()
    return app


def test_get_channels_hook_adds_announcements():
    app = make()
    conn = subscribe(app, "channels=news")
    publish(app, channel="announcements", data="maintenance at 5", key="s3cret")
    assert [e["data"] for e in conn.events()] == ["maintenance at 5"]


def test_authorize_hook_guards_private_channels():
    app = make()
    status, body = subscribe(app, "channels=private:alice").json()
    assert status == 403 and "private:alice" in body["error"]
    wrong = token_for("s3cret", "private:bob")
    status, _ = subscribe(app, "channels=private:alice&token=" + wrong).json()
    assert status == 403
    ok = subscribe(app, "channels=private:alice&token=" + token_for("s3cret", "private:alice"))
    assert ok.head_and_body()[0] == 200
    assert app.registry.connections == 1


def test_broker_subclass_hooks():
    app = make()
    assert publish(app, channel="readonly.prices", data="x", key="s3cret")[0] == 403
    conn = subscribe(app, "channels=a")
    assert app.broker.upstream == {"a": 1, "announcements": 1}
    conn.close()
    assert app.broker.upstream == {"a": 0, "announcements": 0}


def test_extra_url():
    status, body = Connection(make()).send("GET", "/health").json()
    assert status == 200 and body == {"ok": True, "connections": 0}
