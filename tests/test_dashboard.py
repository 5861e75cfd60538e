"""The live dashboard: its feed in memory, and the page in a real headless Chromium
against the real daemon (counts, chart, channels, live tail, the publish form)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cyclone_sse.event import parse_stream
from tests.daemon import Daemon, SSEClient
from tests.memory import Connection, make_app, publish
from tests.services import free_port
from tests.test_browser import browser, pytestmark  # noqa: F401

DOCS = Path(__file__).resolve().parent.parent / "docs"


def snapshots(conn):
    return [json.loads(e["data"]) for e in parse_stream(conn.head_and_body()[2].decode())
            if e.get("event") == "stats"]


def test_the_feed_sends_the_numbers_every_second_and_stops_with_its_client():
    app = make_app()
    feed = Connection(app).send("GET", "/stats/stream")
    status, headers, _ = feed.head_and_body()
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    listener = Connection(app).send("GET", "/?channels=news")
    publish(app, channel="news", data="x")
    app.clock.advance(1)
    first, second = snapshots(feed)
    declared = [e for e in parse_stream(feed.head_and_body()[2].decode())
                if e.get("event") == "metrics"]
    assert len(declared) == 1  # the declarations come first, once
    assert second["connections"] == 1 and second["events_published"] == 1
    assert second["subscriptions"] == [["news", 1]] and second["time"] - first["time"] == 1
    feed.close()
    listener.close()
    assert not [c for c in app.clock.getDelayedCalls() if "_snapshot" in repr(c)]


def test_channel_names_are_hidden_where_stats_hides_them():
    app = make_app(http_secret="k")
    feed = Connection(app).send("GET", "/stats/stream")
    Connection(app).send("GET", "/?channels=secret")
    app.clock.advance(1)
    assert snapshots(feed)[-1]["subscriptions"] == []
    assert snapshots(feed)[-1]["channels"] == 1


def test_the_dashboard_can_be_switched_off():
    app = make_app(dashboard=False)
    for path in ("/dashboard", "/stats/stream"):
        assert Connection(app).send("GET", path).head_and_body()[0] == 404
    page = Connection(make_app()).send("GET", "/dashboard").head_and_body()
    assert page[0] == 200 and b"<title>cyclone-sse dashboard</title>" in page[2]
    assert "default-src 'self'" in page[1]["content-security-policy"]


def test_the_dashboard_live(tmp_path, browser):  # noqa: F811
    internal = free_port()
    daemon = Daemon(tmp_path, f"--internal-port={internal}")
    public = daemon.port
    listeners = [SSEClient(public, "channels=news"), SSEClient(public, "channels=news"),
                 SSEClient(public, "channels=sport")]
    # The test's own probes are evaluated strings, which the page's CSP forbids; the
    # page's own script must not need that: any CSP complaint it causes is collected.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    complaints = []
    page.on("console", lambda message: complaints.append(message.text)
            if message.type == "error" else None)
    try:
        # on the internal listener: its own port, with publish and the tail
        page.goto(f"http://127.0.0.1:{internal}/dashboard")
        page.wait_for_function("document.getElementById('feed').textContent === 'live'")
        page.wait_for_function("document.getElementById('connections').textContent === '3'")
        page.wait_for_function("document.getElementById('table').rows.length === 2")
        rows = page.evaluate("[...document.getElementById('table').rows].map("
                             "r => [r.cells[0].textContent, r.cells[1].textContent])")
        assert rows == [["news", "2"], ["sport", "1"]]  # busiest first
        # the Numbers table: one row per declared number this daemon reports
        page.wait_for_function("document.getElementById('numbers').rows.length > 0")
        numbers = dict(page.evaluate("[...document.getElementById('numbers').rows].map("
                                     "r => [r.cells[0].textContent, r.cells[1].textContent])"))
        assert numbers["connections"] == "3" and numbers["broker.connected"] == "1"
        assert "refused_pattern_replays" in numbers and "broker.name" not in numbers
        page.fill("#tailChannel", "news")
        page.click("#tailForm button")
        page.wait_for_function("document.getElementById('tail').textContent !== undefined")
        for n in range(5):
            page.fill("#pubChannel", "news")
            page.fill("#pubMessage", f"hello {n}")
            page.click("#publishForm button")
            page.wait_for_function(
                f"document.getElementById('published').textContent.startsWith('200') && "
                f"document.getElementById('tail').textContent.includes('hello {n}')")
        assert [e["data"] for e in listeners[0].events(5)] == [f"hello {n}" for n in range(5)]
        assert "news" in page.text_content("#tail")  # the tail names the channel
        page.wait_for_function("parseFloat(document.getElementById('events').textContent) > 0")
        assert complaints == []
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
    finally:
        context.close()
        for listener in listeners:
            listener.close()
        daemon.stop()
