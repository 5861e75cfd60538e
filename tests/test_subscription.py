"""The subscription protocol without HTTP: a Clock, the memory history, the HTTP broker
and a recording subscriber."""

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cyclone_sse.brokers import HttpBroker
from cyclone_sse.history import GAP_UNAVAILABLE, GAP_UNKNOWN, MemoryHistory
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.options import Settings
from cyclone_sse.registry import ChannelRegistry
from cyclone_sse.subscription import Subscriber, Subscriptions


@implementer(ISubscriber)
class Recorder(Subscriber):
    """Writes down what a client would have received, in order."""

    def __init__(self):
        super().__init__()
        self.received = []
        self.gaps = []
        self.gone = False

    def deliver(self, events, frame):
        if not self.live:
            self.hold(events)
            return
        rest = self.unseen(events)
        self.received.extend(e.data for e in (events if rest is None else rest))

    def start_live(self, replay, last_id):
        if replay.gap:
            self.gaps.append(replay.gap)
        self.received.extend(e.data for e in self.release(replay))

    def heartbeat(self):
        pass

    def close(self):
        pass

    def disconnected(self):
        self.gone = True


class PausedHistory:
    """The memory history, whose replays wait until the test lets them through."""

    def __init__(self, history):
        self.history = history
        self.waiting = []

    def append(self, *args, **kwargs):
        return self.history.append(*args, **kwargs)

    def since(self, channels, last_id, limit):
        d = defer.Deferred()
        self.waiting.append((d, channels, last_id, limit))
        return d

    def answer(self):
        for d, channels, last_id, limit in self.waiting:
            d.callback(self.history.since(channels, last_id, limit))
        self.waiting = []

    def fail(self, error):
        for d, *_ in self.waiting:
            d.errback(error)
        self.waiting = []


class World:
    def __init__(self, paused=False, broker_class=HttpBroker):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = ChannelRegistry(self.clock)
        self.store = MemoryHistory(self.clock, epoch="ep")
        self.history = PausedHistory(self.store) if paused else self.store
        self.broker = broker_class(self.registry, self.history, Settings(), self.clock)
        self.subscriptions = Subscriptions(self.registry, self.broker, self.history)

    def publish(self, channel, data):
        results = []
        self.broker.publish(channel, data).addCallback(results.append)
        self.clock.advance(0)  # the fan-out happens at the end of the turn
        return results[0].id


def test_a_new_subscriber_gets_live_events_only():
    world = World()
    world.publish("a", "before")
    sub = Recorder()
    world.subscriptions.open(sub, ["a"], None)
    world.publish("a", "after")
    assert sub.received == ["after"] and sub.gaps == []


def test_events_published_while_the_replay_is_read_are_held_then_sent_once_in_order():
    world = World(paused=True)
    seen = world.publish("a", "seen")
    world.publish("a", "missed")
    sub = Recorder()
    world.subscriptions.open(sub, ["a"], seen)
    world.publish("a", "during replay 1")  # attached first: held, not lost
    world.publish("a", "during replay 2")
    assert sub.received == []
    world.history.answer()  # the replay now also contains the two held events
    assert sub.received == ["missed", "during replay 1", "during replay 2"]
    world.publish("a", "live")
    assert sub.received[-1] == "live" and len(sub.received) == 4
    counters = world.registry.counters
    assert (counters.replays, counters.replayed_events, counters.replay_gaps) == (1, 3, 0)


def test_replay_waits_for_the_broker_to_deliver_the_channels():
    live = defer.Deferred()

    class SlowUpstream(HttpBroker):
        def when_subscribed(self, channels):
            return live

    world = World(broker_class=SlowUpstream)
    seen = world.publish("a", "seen")
    sub = Recorder()
    world.subscriptions.open(sub, ["a"], seen)
    world.publish("a", "before upstream is live")
    assert sub.received == [] and not sub.live
    live.callback(None)
    assert sub.received == ["before upstream is live"]


def test_an_unreachable_history_goes_live_and_says_replay_was_impossible():
    world = World(paused=True)
    sub, fresh = Recorder(), Recorder()
    world.subscriptions.open(sub, ["a"], "ep-1")
    world.subscriptions.open(fresh, ["a"], None)
    world.history.fail(ConnectionError("redis down"))
    assert sub.gaps == [GAP_UNAVAILABLE] and fresh.gaps == []  # no position, no gap
    world.publish("a", "live")
    assert sub.received == ["live"] and fresh.received == ["live"]


def test_an_unknown_position_is_signalled_and_what_is_retained_is_sent():
    world = World()
    world.publish("a", "kept")
    sub = Recorder()
    world.subscriptions.open(sub, ["a"], "other-life-3")
    assert sub.gaps == [GAP_UNKNOWN] and sub.received == ["kept"]


def test_a_subscriber_gone_before_the_replay_is_forgotten():
    world = World(paused=True)
    sub = Recorder()
    world.subscriptions.open(sub, ["a"], "ep-0")
    world.subscriptions.close(sub)
    assert sub.gone and not world.registry.is_attached(sub)
    world.history.answer()
    world.publish("a", "x")
    assert sub.received == [] and not sub.live
    assert world.registry.counters.replays == 0


def test_every_transport_and_broker_provides_its_interface():
    from twisted.internet import reactor  # built, never started: links only need its type

    from cyclone_sse.brokers import BROKERS
    from cyclone_sse.history.redis import RedisHistory
    from cyclone_sse.interfaces import IBroker, IRedisHistory
    from cyclone_sse.links.amqp import find_spec
    from cyclone_sse.links.redis import RedisAddress
    from cyclone_sse.registry import Counters
    from cyclone_sse.transports import PollSubscriber, StreamSubscriber
    from tests.services import require_spec

    class Transport:
        def registerProducer(self, producer, streaming):
            pass

    clock = Clock()
    verifyObject(ISubscriber, StreamSubscriber(Transport(), Counters()))
    verifyObject(ISubscriber, PollSubscriber(clock, lambda body: None, 0, 3000, None))
    registry = ChannelRegistry(reactor)
    redis_history = RedisHistory(reactor, RedisAddress())
    verifyObject(IRedisHistory, redis_history)
    require_spec()
    for name, broker_class in BROKERS.items():
        history = redis_history if name == "redis" else MemoryHistory(reactor)
        settings = Settings(broker=name, amqp_spec=find_spec())
        verifyObject(IBroker, broker_class(registry, history, settings, reactor))
