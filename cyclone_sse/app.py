"""The cyclone Application: settings → history, registry, broker, routes.

This is what ``--app`` replaces.  A subclass may override ``build_handlers``,
``build_broker`` or ``build_history``, or register extra brokers in ``BROKERS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import cyclone.web
from twisted.internet import defer
from twisted.logger import Logger

from cyclone_sse import __version__
from cyclone_sse.brokers import BROKERS, Broker
from cyclone_sse.connection import HTTPConnection
from cyclone_sse.handlers import (
    ChannelStatsHandler,
    MetricsHandler,
    NotFoundHandler,
    PublishHandler,
    StatsHandler,
    SubscribeHandler,
)
from cyclone_sse.history import MemoryHistory
from cyclone_sse.interfaces import IHistory
from cyclone_sse.options import Settings
from cyclone_sse.registry import ChannelRegistry

log = Logger()

#: Seconds between sweeps of expired history.
HISTORY_SWEEP_INTERVAL = 60.0
#: Seconds stop() waits for closed streams to flush before giving up on them.
SHUTDOWN_GRACE = 2.0


class App(cyclone.web.Application):
    protocol = HTTPConnection

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
        self._sweeper: Any = None
        origins = self.settings_obj.cors_origin
        self._origins = None if origins == "*" else {o.strip() for o in origins.split(",")}
        super().__init__(self.build_handlers(), error_handler=NotFoundHandler,
                         max_body=self.settings_obj.max_body,
                         log_function=self._log_request)

    # building blocks (override in a subclass) -------------------------------------

    def build_handlers(self) -> list[tuple[Any, ...]]:
        return [
            (r"/", SubscribeHandler),
            (r"/publish", PublishHandler),
            (r"/stats", StatsHandler),
            (r"/stats/channels", ChannelStatsHandler),
            (r"/metrics", MetricsHandler),
        ]

    def build_history(self) -> IHistory:
        s = self.settings_obj
        if s.history == "redis":
            from cyclone_sse.history_redis import RedisHistory
            from cyclone_sse.redis_client import RedisAddress, RedisLink
            link = RedisLink(self.clock, RedisAddress.from_settings(s), "history")
            history = RedisHistory(link, prefix=s.redis_prefix, size=s.history_size,
                                   ttl=s.history_ttl, channels=s.history_channels)
            link.on_up = history.load_scripts
            return history
        return MemoryHistory(self.clock, size=s.history_size, ttl=s.history_ttl,
                             channels=s.history_channels)

    def build_broker(self) -> Broker:
        name = self.settings_obj.broker
        if name not in BROKERS:
            raise ValueError(f"broker {name!r} is not available; known: {', '.join(BROKERS)}")
        return BROKERS[name](self.registry, self.history, self.settings_obj, self.clock)

    # life cycle (driven by service.AppService) -------------------------------------

    def start(self) -> None:
        self.registry.start()
        start_history = getattr(self.history, "start", None)
        if start_history is not None:
            start_history()
        self.broker.start()
        sweep = getattr(self.history, "sweep", None)
        if sweep is not None:
            from twisted.internet.task import LoopingCall
            self._sweeper = LoopingCall(sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(HISTORY_SWEEP_INTERVAL, now=False)

    def stop(self) -> defer.Deferred[None]:
        """Close every stream (clients reconnect elsewhere), wait until they are gone
        or ``SHUTDOWN_GRACE`` passed, then stop the broker."""
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        closing = self.registry.connections
        if closing:
            log.info("closing {count} open connections", count=closing)
        d = self.registry.stop()
        d.addTimeout(SHUTDOWN_GRACE, self.clock, onTimeoutCancel=lambda *_: None)
        d.addCallback(lambda _: self.broker.stop())
        d.addCallback(lambda _: getattr(self.history, "stop", lambda: None)())
        return d

    # helpers for the handlers -------------------------------------------------------

    def allowed_origin(self, origin: str | None) -> str | None:
        if self._origins is None:
            return "*"
        return origin if origin in self._origins else None

    def stats(self) -> dict[str, object]:
        registry = self.registry
        counts = registry.subscriber_counts()
        stats: dict[str, object] = {
            "version": __version__,
            "pid": os.getpid(),  # which daemon answered, when several share a port
            "uptime": round(registry.uptime(), 3),
            "connections": registry.connections,
            "channels": len(counts),
            "subscriptions": [list(pair) for pair in counts],
            "broker": self.broker.stats(),
        }
        stats.update(registry.counters.as_dict())
        history_stats = getattr(self.history, "stats", None)
        if history_stats is not None:
            stats["history"] = history_stats()
        return stats

    def _log_request(self, handler: cyclone.web.RequestHandler) -> None:
        # Errors are logged where they are handled; successes only on request.
        if self.settings_obj.access_log:
            log.info("{status} {summary} {ms:.2f}ms", status=handler.get_status(),
                     summary=handler._request_summary(),
                     ms=1000.0 * handler.request.request_time())
