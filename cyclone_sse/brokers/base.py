"""What every broker shares: publish = store in the history, then fan out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from cyclone_sse.event import Event
from cyclone_sse.interfaces import IBroker, IHistory, IStats
from cyclone_sse.registry import ChannelRegistry


@dataclass(frozen=True)
class Published:
    """The answer to one publish: the id assigned and how many subscribers got it."""

    channel: str
    id: str
    subscribers: int
    duplicate: bool = False

    def as_json(self) -> dict[str, object]:
        return {"channel": self.channel, "id": self.id, "subscribers": self.subscribers,
                "duplicate": self.duplicate}


@implementer(IBroker, IStats)
class Broker(MultiService):
    """Base broker.  Subclasses that connect upstream add their links as child services
    and override ``subscribe`` and ``unsubscribe``; the local registry tells them which
    channels it needs through ``registry.listeners``."""

    name = "base"
    #: The history store this broker works with when ``--history`` is not given.
    default_history = "memory"

    def __init__(self, registry: ChannelRegistry, history: IHistory, settings: Any,
                 reactor: IReactorTime | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.history = history
        self.settings = settings
        self.reactor: Any = reactor if reactor is not None else registry.clock
        registry.listeners.append(self._on_channel)

    @classmethod
    def check_options(cls, settings: Any) -> None:
        """Raise ``ValueError`` (naming the option) for options this broker cannot run
        with; called before the daemon starts."""

    @property
    def connected(self) -> bool:
        """Local brokers are always connected; upstream ones derive it from their link."""
        return True

    def _on_channel(self, channel: str, first: bool) -> None:
        if first:
            self.subscribe(channel)
        else:
            self.unsubscribe(channel)

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None) -> defer.Deferred[Published]:
        d = defer.maybeDeferred(self.history.append, channel, data, name, publisher_id)
        d.addCallback(self._deliver_appended)
        return d

    def _deliver_appended(self, appended: tuple[Event, bool]) -> Published:
        event, fresh = appended
        if not fresh:
            return Published(event.channel, event.id, 0, duplicate=True)
        return Published(event.channel, event.id, self.registry.deliver(event))

    def subscribe(self, channel: str) -> None:
        pass

    def unsubscribe(self, channel: str) -> None:
        pass

    def when_subscribed(self, channels: list[str]) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "connected": self.connected}
