"""The live dashboard: ``GET /dashboard`` (the page, ``media/dashboard.html``) and
``GET /stats/stream`` (its feed: the daemon's numbers as an event stream, one ``stats``
event a second).  Mounted with the statistics (on the internal listener when there is
one) unless ``--dashboard=no``."""

from __future__ import annotations

from typing import Any

import cyclone.web
from twisted.internet.task import LoopingCall

from cyclone_sse.event import dumps, encode
from cyclone_sse.handlers.base import BaseHandler
from cyclone_sse.metrics import COUNTER, GAUGE, METRICS

#: Seconds between two snapshots on /stats/stream.
STATS_INTERVAL = 1.0
#: Channels a snapshot lists (the busiest): a dashboard, not an export.
STATS_CHANNELS = 50
#: The first event of /stats/stream: the numbers the page lists (one row each).
METRICS_EVENT = encode(None, dumps([
    {"path": m.path, "kind": m.kind, "help": m.help} for m in METRICS
    if m.kind in (COUNTER, GAUGE) and not m.label]).decode("utf-8"), "metrics")


class DashboardHandler(BaseHandler):
    """``GET /dashboard``: the page; everything it needs comes from this daemon."""

    def get(self) -> None:
        page = self.application.static_files.get("dashboard.html")
        if page is None:
            raise cyclone.web.HTTPError(404, "dashboard.html is not installed")
        self.set_header("Content-Type", page.content_type)
        # its inline script and style, nothing from elsewhere
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; script-src 'unsafe-inline' 'self'; "
                        "style-src 'unsafe-inline'; img-src 'self' data:")
        self.finish(page.body)


class StatsStreamHandler(BaseHandler):
    """``GET /stats/stream``: a ``metrics`` event declaring the numbers (path, kind,
    help), then a ``stats`` event every second with /stats and the busiest channels
    (names only where /stats would show them)."""

    _timer: Any = None

    @cyclone.web.asynchronous
    def get(self) -> None:
        self.visible = self.channels_visible()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Connection", "close")
        self.set_header("X-Accel-Buffering", "no")
        connection = self.request.connection
        connection.start_streaming()
        # Written straight to the transport, as the event streams are: the response has
        # no length and ends with the connection (no chunked coding).
        self.transport = connection.transport
        self.transport.write(self.take_over())
        self.transport.write(METRICS_EVENT)
        self._timer = LoopingCall(self._snapshot)
        self._timer.clock = self.application.clock
        self._timer.start(STATS_INTERVAL, now=True)

    def _snapshot(self) -> None:
        app = self.application
        stats = app.stats(self.visible)
        counts: Any = stats["subscriptions"]  # [[channel, subscribers]], sorted by name
        stats["subscriptions"] = sorted(counts, key=lambda pair: -pair[1])[:STATS_CHANNELS]
        stats["time"] = app.clock.seconds()
        self.transport.write(encode(None, dumps(stats).decode("utf-8"), "stats"))

    def on_connection_close(self, *args: Any) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
