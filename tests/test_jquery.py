"""The browser side as pages use it, in a real headless Chromium against the real
daemon: the bundled jQuery plugins (jQuery 1.x and 3.x from npm), the polyfill with no
EventSource (same origin and across origins), resuming after a cut with Chromium and
with npm's ``eventsource`` client, and a restart with the Redis history."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from queue import Queue

import pytest

from extras.publisher import RedisPublisher
from tests.daemon import DEADLINE, Daemon
from tests.services import REDIS, TcpCut, free_port, redis_prefix, require  # noqa: F401
from tests.test_browser import QuietPages, browser, pytestmark  # noqa: F401

JS = Path(__file__).resolve().parent / "js"
JQUERY = {"1": "jquery1/dist/jquery.min.js", "3": "jquery3/dist/jquery.min.js"}


@pytest.fixture(scope="session")
def node_modules():
    """The npm clients of tests/js/package.json, installed from the registry once."""
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is not installed (CI never skips)")
        pytest.skip("npm is not installed")
    modules = JS / "node_modules"
    if not all((modules / name).is_dir() for name in ("eventsource", "jquery1", "jquery3",
                                                       "ws", "sockjs-client")):
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=JS, check=True, timeout=300)
    return modules


class _Pages(QuietPages):
    """The web application's origin: pages registered by the tests, and jQuery."""

    pages: dict[str, str] = {}
    modules: Path

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/jquery"):
            self.answer((self.modules / JQUERY[path[7]]).read_bytes(), "text/javascript")
        elif path in self.pages:
            self.answer(self.pages[path].encode(), "text/html; charset=utf-8")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def site(node_modules):
    _Pages.modules = node_modules
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def page_html(daemon_url: str, jquery_url: str, body: str, script: str) -> str:
    """A page loading jQuery, then the plugins from the daemon as README shows."""
    return (f"<!doctype html><meta charset=utf-8><title>page</title>{body}"
            f"<script src='{jquery_url}'></script>"
            f"<script src='{daemon_url}/static/jquery.eventsource.js'></script>"
            f"<script src='{daemon_url}/static/jquery.sse.js'></script>"
            f"<script>{script}</script>")


def open_page(browser, url, html=None, same_origin_with=None, no_eventsource=False,  # noqa: F811
              node_modules=None, jquery="3"):
    """A new page at ``url``.  With ``same_origin_with`` (the daemon's URL) the page
    itself and jQuery are answered by the browser for that origin, so the page shares
    the daemon's origin, while every request to the daemon is real."""
    context = browser.new_context()
    if no_eventsource:
        context.add_init_script("delete window.EventSource;")
    page = context.new_page()
    if same_origin_with:
        page.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))
        page.route(f"{same_origin_with}/jquery.js", lambda route: route.fulfill(
            body=(node_modules / JQUERY[jquery]).read_bytes(),
            content_type="text/javascript"))
    page.goto(url)
    return page


def wait(page, expression, timeout=20000):
    page.wait_for_function(expression, timeout=timeout)


MULTIPLEX = """
<div class="sse" id="weather" data-sse-channels="weather" data-sse-events="weather"></div>
<div class="sse" id="general" data-sse-channels="general,room.*"
     data-sse-events="general,score"></div>
<div class="sse" id="rooms" data-sse-channels="room.*"></div>
"""
MULTIPLEX_SCRIPT = """
window.got = {weather: [], general: [], rooms: []}; window.opened = 0;
$.sse({url: "%(daemon)s/", type: "%(type)s"});
$("#weather").on("sse.weather", function (e, d) { got.weather.push(["weather", d]); });
$("#general").on("sse.general", function (e, d) { got.general.push(["general", d]); });
$("#general").on("sse.score", function (e, d) { got.general.push(["score", d]); });
$("#rooms").on("sse.message", function (e, d) { got.rooms.push(["message", d]); });
$("#weather").on("sse.open", function () { window.opened += 1; });
"""


@pytest.mark.parametrize("jquery,kind", [("1", "json"), ("3", "json"), ("3", "text")])
def test_one_connection_for_many_elements_each_gets_only_its_events(
        tmp_path, browser, site, jquery, kind):  # noqa: F811
    daemon = Daemon(tmp_path, "--cors-origin=*")
    url = f"http://127.0.0.1:{daemon.port}"
    _Pages.pages[f"/multiplex-{jquery}-{kind}"] = page_html(
        url, f"{site}/jquery{jquery}.js", MULTIPLEX,
        MULTIPLEX_SCRIPT % {"daemon": url, "type": kind})
    page = open_page(browser, f"{site}/multiplex-{jquery}-{kind}")
    try:
        wait(page, "window.opened >= 1")
        assert daemon.request("GET", "/stats")[1]["connections"] == 1  # ONE connection
        publish = daemon.request
        for channel, data, event in [("weather", '{"t": 21}', None),
                                     ("general", '["general", {"n": 1}]', None),  # 2013
                                     ("general", '{"goal": 1}', "score"),
                                     ("room.7", '"hi"', None),
                                     ("general", '{"x": 2}', None)]:
            fields = {"channel": channel, "message": data, **({"event": event} if event
                                                              else {})}
            assert publish("POST", "/publish", json.dumps(fields),
                           {"Content-Type": "application/json"})[0] == 200
        wait(page, "got.general.length >= 3 && got.rooms.length >= 1")
        got = page.evaluate("window.got")
        parse = json.loads if kind == "json" else (lambda text: text)
        assert got["weather"] == [["weather", parse('{"t": 21}')]]
        general = [["general", {"n": 1}]] if kind == "json" else \
            [["general", '["general", {"n": 1}]']]  # text: no 2013 unwrapping
        assert got["general"] == [*general, ["score", parse('{"goal": 1}')],
                                  ["general", parse('{"x": 2}')]]
        # a pattern element gets its room; "general" lists room.* but no event of it
        assert got["rooms"] == [["message", parse('"hi"')]]
    finally:
        page.context.close()
        daemon.stop()


SIMPLE = """<div id="feed" data-sse-address="%(daemon)s/" data-sse-channels="base"></div>
<script src='%(jquery)s'></script>
<script src='%(daemon)s/static/jquery.eventsource.js'></script>
<script src='%(daemon)s/static/jquery.sse.simple.js'></script>
<script>
window.got = []; window.opened = 0;
$("#feed").on("sse.open", function () { window.opened += 1; });
$("#feed").on("sse.message", function (e, a, b, c) { got.push([a, b, c]); });
$("#feed").sse({debug: true});
</script>"""


def test_the_2013_one_element_page_works_as_written(tmp_path, browser, site):  # noqa: F811
    daemon = Daemon(tmp_path, "--cors-origin=*")
    url = f"http://127.0.0.1:{daemon.port}"
    _Pages.pages["/simple"] = SIMPLE % {"daemon": url, "jquery": f"{site}/jquery1.js"}
    page = open_page(browser, f"{site}/simple")
    try:
        wait(page, "window.opened >= 1")
        daemon.publish_form("message=%5B1%2C2%2C3%5D&channel=base")  # the README's curl
        wait(page, "got.length >= 1")
        # jQuery spreads an array handed to trigger(): the 2013 handlers saw (e, 1, 2, 3)
        assert page.evaluate("window.got") == [[1, 2, 3]]
    finally:
        page.context.close()
        daemon.stop()


POLYFILL_SCRIPT = """
window.got = []; window.errors = 0; window.opened = 0;
$.eventsource({label: "feed", url: "%(daemon)s/", data: {channels: ["a", "b"]},
               dataType: "text", events: ["note"],
               open: function () { window.opened += 1; },
               message: function (data, event) {
                 got.push([event.type, data, event.lastEventId]); },
               error: function () { window.errors += 1; }});
window.transport = $.eventsource("streams", "feed").transport;
"""


@pytest.mark.parametrize("origin", ["same", "cross"])
def test_the_polyfill_long_polls_without_eventsource_and_loses_nothing(
        tmp_path, browser, site, node_modules, origin):  # noqa: F811
    daemon = Daemon(tmp_path, "--cors-origin=*", "--poll-timeout=2")
    url = f"http://127.0.0.1:{daemon.port}"
    if origin == "same":
        page_url, jquery = f"{url}/polyfill-page", f"{url}/jquery.js"
    else:
        page_url, jquery = f"{site}/polyfill", f"{site}/jquery1.js"
    html = page_html(url, jquery, "", POLYFILL_SCRIPT % {"daemon": url})
    _Pages.pages["/polyfill"] = html
    page = open_page(browser, page_url, html, same_origin_with=url if origin == "same"
                     else None, no_eventsource=True, node_modules=node_modules)
    try:
        assert page.evaluate("typeof window.EventSource") == "undefined"
        assert page.evaluate("window.transport") == "poll"
        # the first answer (at the poll timeout) gives the position: from then on
        # nothing may be missed
        wait(page, "window.opened >= 1")
        sent = []
        for n in range(40):  # faster than one poll per event: answers carry several
            channel = "ab"[n % 2]
            event = "note" if n % 10 == 9 else None
            fields = {"channel": channel, "message": f"m{n}\r\nline 2",
                      **({"event": event} if event else {})}
            status, answer = daemon.request("POST", "/publish", json.dumps(fields),
                                            {"Content-Type": "application/json"})
            assert status == 200
            sent.append([event or "message", f"m{n}\nline 2", answer["events"][0]["id"]])
        wait(page, f"got.length >= {len(sent)}")
        got = page.evaluate("window.got")
        assert got == sent  # every one, once, in order, CRLF as EventSource gives it
        assert page.evaluate("window.errors") == 0
    finally:
        page.context.close()
        daemon.stop()


def _lines_of(process):
    """The lines a process prints, each waited for at most DEADLINE seconds."""
    queue: Queue[str] = Queue()
    threading.Thread(target=lambda: [queue.put(line) for line in process.stdout],
                     daemon=True).start()
    while True:
        yield queue.get(timeout=DEADLINE)


RESUME_SCRIPT = """([url]) => {
    window.got = []; window.opened = 0;
    const source = new EventSource(url);
    source.onopen = () => { window.opened += 1; };
    source.onmessage = (e) => window.got.push(["message", e.data, e.lastEventId]);
    for (const name of ["stream-open", "history-gap"]) {
        source.addEventListener(name, (e) => window.got.push([name, e.data, e.lastEventId]));
    }
}"""


def test_a_stream_cut_before_any_event_resumes_with_chromium_and_npm_eventsource(
        tmp_path, browser, site, node_modules):  # noqa: F811
    """Cut before the first event, a client must still know where it was: the daemon's
    stream-open event carries the position as data, which npm's client records too."""
    daemon = Daemon(tmp_path, "--retry=200")
    relay = TcpCut(("127.0.0.1", daemon.port))
    url = f"http://127.0.0.1:{relay.port}/?channels=a"
    _Pages.pages["/blank"] = "<!doctype html><title>blank</title>"
    page = open_page(browser, f"{site}/blank")
    node = subprocess.Popen(["node", str(JS / "follow.mjs"), url], cwd=JS,
                            stdout=subprocess.PIPE, text=True)
    try:
        page.evaluate(RESUME_SCRIPT, [url])
        wait(page, "window.got.length >= 1")
        lines = _lines_of(node)
        node_got = [json.loads(next(lines)) for _ in range(2)]
        assert [g["type"] for g in node_got] == ["open", "stream-open"]
        position = page.evaluate("window.got")[0]
        assert position[0] == "stream-open" and json.loads(position[1]) == {
            "lastEventId": position[2]}
        relay.cut()  # before any event
        daemon.publish_form("message=while+cut&channel=a")
        relay.restore()
        wait(page, "window.got.length >= 2")
        assert page.evaluate("window.got")[1][:2] == ["message", "while cut"]
        while True:  # npm's client: error, then open again, then the missed event
            got = json.loads(next(lines))
            if got["type"] == "message":
                break
            assert got["type"] in ("error", "open"), got
        assert got["data"] == "while cut"
        daemon.publish_form("message=live&channel=a")
        wait(page, "window.got.length >= 3")
        assert json.loads(next(lines))["data"] == "live"
        assert [g[0] for g in page.evaluate("window.got")] == [
            "stream-open", "message", "message"]  # no gap, nothing twice
    finally:
        node.kill()
        node.wait(DEADLINE)
        page.context.close()
        relay.cut()
        daemon.stop()


def test_a_page_resumes_exactly_across_a_daemon_restart_with_the_redis_history(
        tmp_path, browser, site, redis_prefix):  # noqa: F811
    require(REDIS, "Redis")
    port = free_port()
    options = (f"--port={port}", "--broker=redis", f"--redis-prefix={redis_prefix}",
               "--retry=200", "--cors-origin=*")
    url = f"http://127.0.0.1:{port}"
    _Pages.pages["/restart"] = page_html(url, f"{site}/jquery3.js", MULTIPLEX,
                                         MULTIPLEX_SCRIPT % {"daemon": url, "type": "json"})
    first = Daemon(tmp_path, *options)
    page = open_page(browser, f"{site}/restart")
    try:
        wait(page, "window.opened >= 1")
        for n in (1, 2):
            first.publish_form(f"message={n}&channel=weather")
        wait(page, "got.weather.length >= 2")
        first.stop()
        # published into the shared history while no daemon runs
        redis = RedisPublisher(*REDIS, prefix=redis_prefix)
        redis.send_event("weather", "3")
        redis.close()
        second = Daemon(tmp_path, *options)
        try:
            wait(page, "window.opened >= 2 && got.weather.length >= 3")
            second.publish_form("message=4&channel=weather")
            wait(page, "got.weather.length >= 4")
            assert page.evaluate("got.weather") == [["weather", n] for n in (1, 2, 3, 4)]
        finally:
            second.stop()
    finally:
        page.context.close()


def test_the_demo_runs_as_the_readme_says(tmp_path, browser, node_modules,  # noqa: F811
                                          monkeypatch):
    monkeypatch.setenv("CYCLONE_SSE_DEMO_JQUERY",
                       str(node_modules / "jquery3" / "dist" / "jquery.min.js"))
    daemon = Daemon(tmp_path, "--app=extras.demo.app.App")
    page = open_page(browser, f"http://127.0.0.1:{daemon.port}/demo")
    try:
        wait(page, "$('#weather .now').text().indexOf('°C') > 0")
        wait(page, "$('#general li').length >= 1")
        assert daemon.request("GET", "/stats")[1]["connections"] == 1  # two widgets
        page.fill("#text", "hello from the page")
        page.click("#note button")
        wait(page, "$('#general li').first().text() === 'hello from the page'")
    finally:
        page.context.close()
        daemon.stop()


WS_CLIENT = """([url]) => {
    window.got = []; window.opened = 0;
    window.stream = CycloneSSE.connect(url, {
        channels: ["a"], transport: "websocket", retry: 200,
        onopen: () => { window.opened += 1; },
        onmessage: (e) => window.got.push([e.channel, e.data, e.lastEventId])});
    return window.stream.transport;
}"""


def bundled_client_and_node_ws(browser, daemon, channel):  # noqa: F811
    """A Chromium page on the daemon's origin with the bundled client loaded, and Node's
    ``ws`` subscribed to ``channel`` (its lines, after ``subscribed``)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{daemon.port}/static/cyclone-sse.js")
    page.add_script_tag(url=f"http://127.0.0.1:{daemon.port}/static/cyclone-sse.js")
    node = subprocess.Popen(["node", str(JS / "ws-follow.mjs"),
                             f"ws://127.0.0.1:{daemon.port}/", channel], cwd=JS,
                            stdout=subprocess.PIPE, text=True)
    lines = _lines_of(node)
    assert json.loads(next(lines))["type"] == "subscribed"
    return context, page, node, lines


def test_websocket_resume_across_a_cut_with_chromium_and_node_ws(
        tmp_path, browser, node_modules):  # noqa: F811
    daemon = Daemon(tmp_path)
    relay = TcpCut(("127.0.0.1", daemon.port))
    context, page, node, lines = bundled_client_and_node_ws(browser, daemon, "a")
    try:
        assert page.evaluate(WS_CLIENT, [f"http://127.0.0.1:{relay.port}/"]) == "websocket"
        wait(page, "window.opened >= 1")
        daemon.publish_form("channel=a&message=one")
        wait(page, "window.got.length >= 1")
        relay.cut()  # the browser's connection dies; Node's (direct) stays
        daemon.publish_form("channel=a&message=two")
        relay.restore()
        wait(page, "window.opened >= 2 && window.got.length >= 2")
        daemon.publish_form("channel=a&message=three")
        wait(page, "window.got.length >= 3")
        got = page.evaluate("window.got")
        assert [g[:2] for g in got] == [["a", "one"], ["a", "two"], ["a", "three"]]
        assert page.evaluate("window.stream.transport") == "websocket"
        node_got = [json.loads(next(lines)) for _ in range(3)]
        assert [(m["type"], m["data"]) for m in node_got] == [
            ("event", "one"), ("event", "two"), ("event", "three")]
        assert [m["id"] for m in node_got] == [g[2] for g in got]  # the same ids
    finally:
        node.kill()
        node.wait(DEADLINE)
        context.close()
        relay.cut()
        daemon.stop()


CHAT = """async ([url]) => {
    const streams = {}; window.heard = {ann: [], bob: []}; window.joins = [];
    for (const name of ["ann", "bob"]) {
        await new Promise((opened) => {
            streams[name] = CycloneSSE.connect(url, {
                channels: ["chat.lobby"], transport: "websocket", onopen: opened,
                onmessage: (e) => window.heard[name].push([e.data, e.lastEventId])});
            if (name === "ann") {
                streams.ann.on("join", (e) => window.joins.push(e.client));
            }
        });
    }
    window.streams = streams;
    const answer = await streams.ann.publish("chat.lobby", {text: "hi"});
    const refused = await streams.ann.publish("news", "x").catch((e) => e);
    const clients = await streams.bob.presence("chat.lobby");
    return {eventId: answer.eventId, subscribers: answer.subscribers,
            refused: refused.code, clients: clients.map((c) => c.client).sort(),
            mine: [streams.ann.client, streams.bob.client].sort()};
}"""


def test_a_page_publishes_and_sees_presence_over_websocket_with_node_ws_listening(
        tmp_path, browser, node_modules):  # noqa: F811
    daemon = Daemon(tmp_path, "--policies=chat.*=public+publish+presence")
    context, page, node, lines = bundled_client_and_node_ws(browser, daemon, "chat.lobby")
    try:
        result = page.evaluate(CHAT, [f"http://127.0.0.1:{daemon.port}/"])
        assert result["subscribers"] == 3 and result["refused"] == 403
        assert set(result["mine"]) <= set(result["clients"])  # (Node's client is there too)
        wait(page, "window.heard.bob.length >= 1 && window.heard.ann.length >= 1")
        assert page.evaluate("window.heard.bob") == [['{"text":"hi"}', result["eventId"]]]
        assert page.evaluate("window.heard.ann") == [['{"text":"hi"}', result["eventId"]]]
        node_got = [json.loads(line) for line in (next(lines) for _ in range(4))]
        events = [m for m in node_got if m["type"] == "event"]
        assert [(e["data"], e["id"]) for e in events] == [('{"text":"hi"}', result["eventId"])]
        wait(page, "window.joins.length >= 2")  # ann heard her own join, then bob's
        assert page.evaluate("window.joins") == [page.evaluate("window.streams.ann.client"),
                                                 page.evaluate("window.streams.bob.client")]
    finally:
        node.kill()
        node.wait(DEADLINE)
        context.close()
        daemon.stop()
