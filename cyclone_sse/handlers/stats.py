"""Read-only views of the daemon: ``/stats``, ``/stats/channels``, ``/metrics``, and the
health checks ``/healthz`` and ``/readyz``."""

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


class HealthHandler(BaseHandler):
    """``GET /healthz``: the process runs and answers (for liveness probes)."""

    def get(self) -> None:
        self.write_json({"status": "alive"})


class ReadyHandler(BaseHandler):
    """``GET /readyz``: 200 while this daemon can serve — its service is running and
    its broker and history are reachable — else 503 with the reasons (for balancers
    and readiness probes)."""

    def get(self) -> None:
        reasons = self.application.not_ready()
        if reasons:
            self.write_json({"status": "not ready", "reasons": reasons}, 503)
        else:
            self.write_json({"status": "ready"})
