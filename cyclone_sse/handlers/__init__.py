"""HTTP handlers: thin adapters from HTTP to the subscription protocol, the broker and
the statistics.  ``--app`` subclasses them (see README "Extending")."""

from cyclone_sse.handlers.base import Application, BaseHandler, NotFoundHandler
from cyclone_sse.handlers.dashboard import DashboardHandler, StatsStreamHandler
from cyclone_sse.handlers.publish import PublishHandler
from cyclone_sse.handlers.pushpin import PushpinPublishHandler
from cyclone_sse.handlers.static import StaticHandler
from cyclone_sse.handlers.stats import (
    ChannelStatsHandler,
    HealthHandler,
    MetricsHandler,
    PresenceHandler,
    ReadyHandler,
    StatsHandler,
)
from cyclone_sse.handlers.subscribe import SubscribeHandler

__all__ = ["Application", "BaseHandler", "ChannelStatsHandler", "DashboardHandler",
           "HealthHandler", "MetricsHandler", "NotFoundHandler", "PresenceHandler",
           "PublishHandler", "PushpinPublishHandler", "ReadyHandler", "StaticHandler",
           "StatsHandler", "StatsStreamHandler", "SubscribeHandler"]
