"""The cyclone Application: settings → history, registry, broker, subscriptions, routes,
and the service tree that runs them.

This is what ``--app`` replaces.  A subclass may override ``build_handlers``,
``build_broker`` or ``build_history``, or register extra brokers in ``BROKERS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import cyclone.web
from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse import __version__
from cyclone_sse.auth.access import Gate
from cyclone_sse.auth.callback import AuthCallback
from cyclone_sse.auth.policy import PolicyTable
from cyclone_sse.auth.publishers import Publishers
from cyclone_sse.auth.tokens import TokenVerifier
from cyclone_sse.brokers import BROKERS, Broker, broker_class
from cyclone_sse.channels import is_pattern
from cyclone_sse.errors import TooManyRequests
from cyclone_sse.handlers import (
    ChannelStatsHandler,
    DashboardHandler,
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    PresenceHandler,
    PublishHandler,
    PushpinPublishHandler,
    ReadyHandler,
    StaticHandler,
    StatsHandler,
    StatsStreamHandler,
    SubscribeHandler,
)
from cyclone_sse.handlers.publish import LeanPublish
from cyclone_sse.handlers.subscribe import LeanSubscribe
from cyclone_sse.history import MemoryHistory
from cyclone_sse.http.response import log_access
from cyclone_sse.http.server import HTTPConnection, Route
from cyclone_sse.interfaces import IHistory, IStats
from cyclone_sse.limits import ConnectionLimits, TokenBucket
from cyclone_sse.options import Settings
from cyclone_sse.presence import Presence
from cyclone_sse.registry import ChannelRegistry
from cyclone_sse.static import load_static, media_dir
from cyclone_sse.subscription import Subscriptions

log = Logger()


#: The stock handlers answered without cyclone's handler machinery, by route.
LEAN: dict[tuple[str, str], tuple[type, Route]] = {
    ("POST", "/publish"): (PublishHandler, LeanPublish),
    ("GET", "/"): (SubscribeHandler, LeanSubscribe),
}


def lean_routes(application: cyclone.web.Application) -> dict[tuple[str, str], Route]:
    """The route table the connection (``http.server``) reads: each ``LEAN`` route
    this application serves with the stock handler, whatever the options (an --app's
    own handler subclass is served through cyclone's application instead)."""
    table = {}
    for (method, path), (stock, runner) in LEAN.items():
        # cyclone keeps its routes as (host pattern, [URLSpec]) pairs in .handlers
        specs = [spec for _, group in application.handlers for spec in group
                 if spec.regex.match(path)]
        if specs and specs[0].handler_class is stock:
            table[(method, path)] = runner
    return table


class App(cyclone.web.Application):
    """The daemon's parts, its routes, and ``service`` (the tree that starts and stops
    them: history, broker, then the registry, stopped in reverse)."""

    protocol = HTTPConnection
    #: False: the public listener (see ``InternalSite``).
    internal = False
    #: Clients held for a --grip-proxy backend now (handlers/grip.py counts them).
    grip_held = 0

    def __init__(self, settings: Mapping[str, Any] | Settings | None = None,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.options = settings
        self.settings_obj = Settings.from_options(settings)
        self.clock = reactor
        self.registry = ChannelRegistry(reactor, self.settings_obj.heartbeat)
        self.history: IHistory = self.build_history()
        self.broker: Broker = self.build_broker()
        self.subscriptions = Subscriptions(self.registry, self.broker, self.history,
                                           self.settings_obj.replay_limit)
        self.gate = self.build_gate()
        s = self.settings_obj
        #: who may publish on /publish, and on Pushpin's /publish/ (its control key too)
        self.publishers = Publishers((s.http_secret,), self.gate.verifier)
        self.pushpin_publishers = Publishers((s.grip_key, s.http_secret), self.gate.verifier,
                                             s.grip_key, s.grip_iss)
        self.presence: Presence = self.build_presence()
        self.connection_limits = ConnectionLimits(self.settings_obj.max_connections,
                                                  self.settings_obj.max_per_address)
        rate = self.settings_obj.pattern_replays
        self.pattern_replays = TokenBucket(self.clock, rate, 2 * rate) if rate else None
        self.static_files = load_static(media_dir())
        self.service = self.build_service()
        origins = self.settings_obj.cors_origin
        self._origins = None if origins == "*" else {o.strip() for o in origins.split(",")}
        super().__init__(self.build_handlers(), error_handler=NotFoundHandler,
                         log_function=self._log_request)
        self.routes = lean_routes(self)

    # building blocks (override in a subclass) -------------------------------------

    @property
    def websockets(self) -> Any:
        """The WebSocket side: handshakes, open connections, pings (built on the first
        upgrade)."""
        hub = self.__dict__.get("_websockets")
        if hub is None:
            from cyclone_sse.transports.websocket import WebSockets
            hub = self.__dict__["_websockets"] = WebSockets(self)
        return hub

    @property
    def sockjs_sessions(self) -> Any:
        """The SockJS sessions over HTTP (built on the first)."""
        sessions = self.__dict__.get("_sockjs_sessions")
        if sessions is None:
            from cyclone_sse.transports.sockjs import Sessions
            sessions = self.__dict__["_sockjs_sessions"] = Sessions(self.clock)
        return sessions

    def build_handlers(self) -> list[tuple[Any, ...]]:
        """Subscribe and static files; publish and statistics too unless they have an
        internal listener of their own (``--internal-port``)."""
        internal = [] if self.settings_obj.internal_port else self.internal_handlers()
        return [(r"/", SubscribeHandler), *internal, *self.health_handlers(),
                (r"/static/([^/]+)", StaticHandler), *self.grip_handlers(),
                *self.sockjs_handlers()]

    def sockjs_stats(self) -> dict[str, dict[str, int]]:
        """SockJS sessions: over HTTP transports (and those a request of each transport
        waits on), and over WebSockets."""
        from cyclone_sse.transports.sockjs import SockJSProtocol, SockJSSession
        sessions = self.__dict__.get("_sockjs_sessions") or {}
        counts = dict.fromkeys(("xhr", "jsonp", "xhr_streaming", "eventsource", "htmlfile"), 0)
        for session in sessions.values():
            if session.receiver is not None:
                counts[session.receiver.kind] += 1
        return {"sockjs": {"sessions": len(sessions), **counts, "websocket": sum(
            1 for c in self.websockets.connections
            if isinstance(c, SockJSProtocol) and not isinstance(c, SockJSSession))}}

    def sockjs_handlers(self) -> list[tuple[Any, ...]]:
        """The ``--sockjs-prefix`` endpoints."""
        from cyclone_sse.handlers.sockjs import routes
        return routes(self.settings_obj)

    def grip_handlers(self) -> list[tuple[Any, ...]]:
        """The ``--grip-proxy`` routes: everything under each prefix."""
        from cyclone_sse.grip import routes
        from cyclone_sse.handlers.grip import GripProxyHandler
        return [(re.escape(prefix) + ".*", GripProxyHandler, {"backend": backend})
                for prefix, backend in routes(self.settings_obj.grip_proxy)]

    def health_handlers(self) -> list[tuple[Any, ...]]:
        """On every listener: balancers and orchestrators probe whichever they reach."""
        return [(r"/healthz", HealthHandler), (r"/readyz", ReadyHandler)]

    def internal_handlers(self) -> list[tuple[Any, ...]]:
        """Publish, statistics, presence and the dashboard (``--dashboard``)."""
        dashboard = [(r"/dashboard", DashboardHandler), (r"/stats/stream", StatsStreamHandler)] \
            if self.settings_obj.dashboard else []
        return [
            (r"/publish", PublishHandler),
            (r"/publish/", PushpinPublishHandler),
            (r"/stats", StatsHandler),
            (r"/stats/channels", ChannelStatsHandler),
            (r"/metrics", MetricsHandler),
            (r"/presence", PresenceHandler),
            *dashboard,
        ]

    def build_gate(self) -> Gate:
        """Policies, the token verifier and the auth callback, from the options."""
        s = self.settings_obj
        verifier = TokenVerifier(s.jwt_key(), s.public_key(), s.jwt_audience, s.jwt_issuer) \
            if s.takes_tokens else None
        callback = AuthCallback(self.clock, s.auth_url, s.auth_timeout, s.auth_cache) \
            if s.auth_url else None
        return Gate(PolicyTable.parse(s.policies, s.default_policy), verifier, callback)

    def build_presence(self) -> Presence:
        """Who is on the ``+presence`` channels: shared through Redis when the history
        is there (every daemon of that Redis sees every member), else this daemon's."""
        s = self.settings_obj
        if s.history == "redis" and self.gate.policies.keeps_presence:
            from cyclone_sse.links.redis import RedisAddress
            from cyclone_sse.presence.redis import RedisPresence
            return RedisPresence(self.clock, RedisAddress.from_settings(s), s.redis_prefix,
                                 s.redis_timeout)
        return Presence()

    def internal_site(self) -> InternalSite:
        return InternalSite(self)

    def build_history(self) -> IHistory:
        s = self.settings_obj
        if s.history == "redis":
            from cyclone_sse.history.redis import RedisHistory
            from cyclone_sse.history.redis_cluster import ClusterHistory
            from cyclone_sse.links.redis import RedisAddress
            address = RedisAddress.from_settings(s)
            store = ClusterHistory if address.cluster else RedisHistory
            return store(self.clock, address, prefix=s.redis_prefix, size=s.history_size,
                         ttl=s.history_ttl, channels=s.history_channels,
                         timeout=s.redis_timeout, max_bytes=s.history_bytes,
                         channel_bytes=s.history_channel_bytes,
                         min_replicas=s.redis_min_replicas)
        memory: type[MemoryHistory] = MemoryHistory
        epoch = None
        if s.history == "amqp-stream":
            from cyclone_sse.history.amqp_stream import StreamHistory, stream_epoch
            memory, epoch = StreamHistory, stream_epoch(s.amqp_stream)
        return memory(self.clock, size=s.history_size, ttl=s.history_ttl,
                      channels=s.history_channels, max_bytes=s.history_bytes,
                      channel_bytes=s.history_channel_bytes, epoch=epoch)

    def build_broker(self) -> Broker:
        name = self.settings_obj.broker
        if name not in BROKERS:
            raise ValueError(f"broker {name!r} is not available; known: {', '.join(BROKERS)}")
        broker = broker_class(self.settings_obj)
        return broker(self.registry, self.history, self.settings_obj, self.clock)

    def build_service(self) -> MultiService:
        """History, broker and presence (with their links and timers, when they are
        services), then the registry: stopping closes the streams first."""
        tree = MultiService()
        for part in (self.history, self.broker, self.presence, self.registry):
            if IService.providedBy(part):
                IService(part).setServiceParent(tree)
        return tree

    # life cycle (driven by service.AppService, or by tests) ------------------------

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> defer.Deferred[Any]:
        """Close every stream (clients reconnect elsewhere), wait until they are gone
        or ``SHUTDOWN_GRACE`` passed, and stop the broker and history links."""
        return defer.maybeDeferred(self.service.stopService)

    # helpers for the handlers -------------------------------------------------------

    def allowed_origin(self, origin: str | None) -> str | None:
        if self._origins is None:
            return "*"
        return origin if origin in self._origins else None

    def stats(self, with_channels: bool = True) -> dict[str, object]:
        """The numbers of /stats (each declared in ``cyclone_sse.metrics``); channel
        names only ``with_channels``."""
        registry = self.registry
        counts = registry.subscriber_counts()
        stats: dict[str, object] = {
            "version": __version__,
            "pid": os.getpid(),  # which daemon answered, when several share a port
            "uptime": round(registry.uptime(), 3),
            "connections": registry.connections,
            "open_connections": self.connection_limits.open,
            "max_connections": self.connection_limits.max_connections,
            "refused_connections": self.connection_limits.refused,
            "closed_at_file_limit": self.connection_limits.closed_at_file_limit,
            "refused_pattern_replays": self.pattern_replays.refused
            if self.pattern_replays else 0,
            "channels": len(counts),
            "subscriptions": [list(pair) for pair in counts] if with_channels else [],
            "broker": self.broker.stats(),
            "grip_held": self.grip_held,
            **self.sockjs_stats(),
            "fanout_seconds": {"count": registry.latency.count,
                               "sum": round(registry.latency.sum, 6)},
        }
        stats.update(registry.counters.as_dict())
        if IStats.providedBy(self.history):
            stats["history"] = IStats(self.history).stats()
        if self.gate.policies.keeps_presence:
            stats["presence"] = self.presence.stats()
        return stats

    def admit_replay(self, channels: list[str], last_id: str | None) -> None:
        """Raise ``TooManyRequests`` past ``--pattern-replays``: a pattern replay walks
        many channels, so a flood of them is refused early (streams and WebSockets)."""
        budget = self.pattern_replays
        if budget is not None and last_id and any(is_pattern(c) for c in channels) \
                and not budget.take():
            raise TooManyRequests("too many pattern replays at once: retry in a second")

    def not_ready(self) -> list[str]:
        """Why this daemon should not get traffic now (empty: it should)."""
        reasons = []
        if not self.service.running:
            reasons.append("not started, or stopping")
        if not self.broker.connected:
            reasons.append(f"broker {self.broker.name} unreachable")
        if IStats.providedBy(self.history) and \
                IStats(self.history).stats().get("connected") is False:
            reasons.append("history store unreachable")
        if self.connection_limits.saturated:
            reasons.append("at the connection limit")
        return reasons

    def _log_request(self, handler: cyclone.web.RequestHandler) -> None:
        # Errors are logged where they are handled; successes only on request, by the
        # one access-log writer the lean paths use too.
        if self.settings_obj.access_log:
            log_access(handler.request, handler.get_status())


class InternalSite(cyclone.web.Application):
    """The internal listener (``--internal-port``): publish, stats and metrics over the
    same parts as the public ``App``, which then serves only subscribers."""

    protocol = HTTPConnection
    internal = True

    def __init__(self, app: App) -> None:
        self.app = app
        # the dashboard's live tail subscribes here like any client (same gate)
        tail = [(r"/", SubscribeHandler)] if app.settings_obj.dashboard else []
        super().__init__([*tail, *app.internal_handlers(), *app.health_handlers()],
                         error_handler=NotFoundHandler, log_function=app._log_request)
        self.routes = lean_routes(self)

    def __getattr__(self, name: str) -> Any:
        # registry, broker, gate, settings_obj, stats()...: the public App's own
        return getattr(self.app, name)
