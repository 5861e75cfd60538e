"""Read-only views of the daemon: ``/stats``, ``/stats/channels``, ``/metrics``,
``/presence``, and the health checks ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from cyclone_sse.channels import check_channel
from cyclone_sse.errors import BadRequest, Unauthorized
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


class PresenceHandler(BaseHandler):
    """``GET /presence?channel=NAME``: who is on a ``+presence`` channel, for the
    application's backend (it names users: the internal listener, or the publish key)."""

    def get(self) -> defer.Deferred[Any]:
        app = self.application
        if not (app.internal or self.key_matches() or
                (not app.settings_obj.http_secret and app.gate.verifier is None)):
            raise Unauthorized("presence names users: send the publish key "
                               "(Authorization: Bearer) or ask the internal listener")
        channel = check_channel(self.get_argument("channel", ""))
        if not app.gate.policies.of(channel).presence:
            raise BadRequest(f"channel {channel} keeps no presence (its policy has no "
                             "+presence)", field="channel")
        d: defer.Deferred[Any] = app.presence.who(channel)
        d.addCallback(lambda clients: self.write_json({"channel": channel,
                                                       "clients": clients}))
        return d


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
