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
from cyclone_sse.links.reconnect import READY_WAIT
from cyclone_sse.registry import ChannelRegistry


@dataclass(slots=True)
class Published:
    """The answer to one publish: the id assigned and how many subscribers got it."""

    channel: str
    id: str
    subscribers: int
    duplicate: bool = False

    def as_json(self) -> dict[str, object]:
        return {"channel": self.channel, "id": self.id, "subscribers": self.subscribers,
                "duplicate": self.duplicate}

    def as_json_text(self) -> str:
        """This event's entry in an answer, as ``dumps`` of ``as_json`` (channel names
        and ids need no escaping: their alphabets have no quote, no backslash and
        nothing outside ASCII), written out directly."""
        return (f'{{"channel":"{self.channel}","id":"{self.id}","subscribers":'
                f'{self.subscribers},"duplicate":{"true" if self.duplicate else "false"}}}')

    def answer(self) -> bytes:
        """The answer to a publish of this one event (``answer_of([self])``)."""
        return (f'{{"status":"ok","events":[{self.as_json_text()}],"subscribers":'
                f'{self.subscribers}}}').encode()

    @staticmethod
    def answer_of(results: list[Published]) -> bytes:
        """The answer to a publish of these events, as ``dumps`` of its JSON value."""
        events = ",".join([r.as_json_text() for r in results])
        total = sum([r.subscribers for r in results])
        return f'{{"status":"ok","events":[{events}],"subscribers":{total}}}'.encode()


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
        # channels subscribed upstream but not yet confirmed: who waits for each
        self._pending: dict[str, list[defer.Deferred[None]]] = {}

    #: The one history this broker works with (None: any), and why.
    required_history: str | None = None
    history_reason = ""

    @classmethod
    def check_options(cls, settings: Any) -> None:
        """Raise ``ValueError`` (naming the option) for options this broker cannot run
        with; called before the daemon starts."""
        if cls.required_history and settings.history != cls.required_history:
            raise ValueError(f"--history={settings.history}: {cls.history_reason}; use "
                             f"--history={cls.required_history}")

    @property
    def connected(self) -> bool:
        """Local brokers are always connected; upstream ones derive it from their link."""
        return True

    def _on_channel(self, channel: str, first: bool) -> None:
        if first:
            if self.confirms_subscriptions:
                self._pending.setdefault(channel, [])
            self.subscribe(channel)
        else:
            self.unsubscribe(channel)

    def publish(self, channel: str, data: str, name: str | None = None,
                publisher_id: str | None = None, grip: Any = None) -> defer.Deferred[Published]:
        d = defer.maybeDeferred(self.history.append, channel, data, name, publisher_id)
        d.addCallback(self._deliver_appended, grip)
        return d

    @property
    def immediate(self) -> bool:
        """Whether ``publish_now`` may be used: this broker publishes as the base does
        (store, then fan out here) into a history that answers at once."""
        return type(self).publish is Broker.publish and \
            getattr(self.history, "synchronous", False)

    def publish_now(self, channel: str, data: str, name: str | None = None,
                    publisher_id: str | None = None, grip: Any = None) -> Published:
        """``publish`` without a Deferred, for ``immediate`` brokers (the lean publish
        path: a Deferred per publish was a tenth of its cost)."""
        return self._deliver_appended(self.history.append(channel, data, name, publisher_id),
                                      grip)

    def _deliver_appended(self, appended: tuple[Event, bool], grip: Any = None) -> Published:
        event, fresh = appended
        if not fresh:
            return Published(event.channel, event.id, 0, duplicate=True)
        event.grip = grip  # (what GRIP-held clients here get of it: pushpin.GripItem)
        return Published(event.channel, event.id, self.registry.deliver(event))

    def subscribe(self, channel: str) -> None:
        pass

    def unsubscribe(self, channel: str) -> None:
        pass

    #: Upstream brokers set this and call ``_subscribed`` once the broker confirmed a
    #: subscription, so that a stream goes live only when nothing can slip past it.
    confirms_subscriptions = False

    def _subscribed(self, result: Any, channel: str) -> None:
        for waiting in self._pending.pop(channel, []):
            if not waiting.called:
                waiting.callback(None)

    def when_subscribed(self, channels: list[str]) -> defer.Deferred[None]:
        """Fires once the upstream broker confirmed the subscriptions, so that reading
        the history afterwards cannot miss an event announced in between."""
        waits = []
        for channel in channels:
            if channel in self._pending:
                d: defer.Deferred[None] = defer.Deferred()
                self._pending[channel].append(d)
                waits.append(d)
        if not waits:
            return defer.succeed(None)
        gathered: defer.Deferred[Any] = defer.gatherResults(waits, consumeErrors=True)
        # Never hold a subscriber through an outage: go on (READY_WAIT, as a link would).
        gathered.addTimeout(READY_WAIT, self.reactor, onTimeoutCancel=lambda *_: None)
        return gathered.addCallback(lambda _: None)

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "connected": self.connected}
