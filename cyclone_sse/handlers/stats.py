"""Read-only views of the daemon: ``/stats``, ``/stats/channels``, ``/metrics``."""

from __future__ import annotations

from cyclone_sse.event import dumps
from cyclone_sse.export import prometheus
from cyclone_sse.handlers.base import BaseHandler


class StatsHandler(BaseHandler):
    """``GET /stats``: counters and per-channel subscriber counts as JSON."""

    def get(self) -> None:
        self.write_json(self.application.stats(self.channels_visible()))


class ChannelStatsHandler(BaseHandler):
    """``GET /stats/channels``: the 2013 format, a list of ``[channel, subscribers]``."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        counts = self.application.registry.subscriber_counts() if self.channels_visible() else []
        self.finish(dumps([list(pair) for pair in counts]))


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the same numbers for Prometheus."""

    def get(self) -> None:
        self.set_header("Content-Type", prometheus.CONTENT_TYPE)
        self.finish(prometheus.render(self.application, self.channels_visible()))
