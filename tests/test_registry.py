from twisted.internet.task import Clock
from zope.interface import implementer

from cyclone_sse.event import Event, EventId
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.registry import ChannelRegistry


@implementer(ISubscriber)
class Recorder:
    access = None

    def __init__(self):
        self.frames = []
        self.beats = 0
        self.closed = False

    def deliver(self, events, frame):
        self.frames.append(frame)

    def heartbeat(self):
        self.beats += 1

    def close(self):
        self.closed = True


def event(channel, n=1, data="x"):
    return Event(channel, data, EventId("e", n))


def test_fan_out_writes_the_same_bytes_object_to_everyone():
    registry = ChannelRegistry(Clock())
    subs = [Recorder() for _ in range(3)]
    for sub in subs:
        registry.attach(sub, ["a"])
    ev = event("a")
    assert registry.deliver(ev) == 3
    assert all(sub.frames == [] for sub in subs)  # fanned out when the turn ends
    registry.clock.advance(0)
    assert all(sub.frames[0] is ev.frame for sub in subs)


def test_only_subscribers_of_the_channel_receive_it():
    registry = ChannelRegistry(Clock())
    a, b = Recorder(), Recorder()
    registry.attach(a, ["a"])
    registry.attach(b, ["b"])
    registry.deliver(event("a"))
    registry.flush()
    assert len(a.frames) == 1 and b.frames == []


def test_patterns_match_and_never_deliver_twice():
    registry = ChannelRegistry(Clock())
    both, pattern_only, other = Recorder(), Recorder(), Recorder()
    registry.attach(both, ["news.sport", "news.*", "*.sport"])
    registry.attach(pattern_only, ["news.*"])
    registry.attach(other, ["weather.*"])
    assert registry.deliver(event("news.sport")) == 2
    registry.flush()
    assert len(both.frames) == 1 and len(pattern_only.frames) == 1 and other.frames == []


class Allows:
    """An access that reads only the channels it names."""

    def __init__(self, *channels):
        self.channels = set(channels)

    def may_read(self, channel):
        return channel in self.channels


def test_a_lone_pattern_reaches_only_what_each_subscriber_may_read():
    # one matching pattern and no exact subscriber: the fan-out skips the dedup set,
    # but never the access check
    registry = ChannelRegistry(Clock())
    allowed, refused, anyone = Recorder(), Recorder(), Recorder()
    allowed.access, refused.access = Allows("u.1"), Allows("u.2")
    for sub in (allowed, refused, anyone):
        registry.attach(sub, ["u.*"])
    assert registry.audience("u.1") == 3  # (what subscribers the pattern holds)
    registry.deliver(event("u.1"))
    registry.flush()
    assert len(allowed.frames) == 1 and refused.frames == [] and len(anyone.frames) == 1
    assert registry.counters.deliveries == 2


def test_overlapping_patterns_and_names_deliver_once_each():
    registry = ChannelRegistry(Clock())
    twice, named = Recorder(), Recorder()
    registry.attach(twice, ["u.*", "*.1"])
    registry.attach(named, ["u.1", "u.*"])
    assert registry.audience("u.1") == 2
    registry.deliver(event("u.1"))
    registry.flush()
    assert len(twice.frames) == 1 and len(named.frames) == 1


def test_brokers_hear_about_first_and_last_subscribers():
    registry = ChannelRegistry(Clock())
    heard = []
    registry.listeners.append(lambda name, first: heard.append((name, first)))
    one, two = Recorder(), Recorder()
    registry.attach(one, ["a", "p*"])
    registry.attach(two, ["a"])
    registry.detach(one)
    registry.detach(two)
    assert heard == [("a", True), ("p*", True), ("p*", False), ("a", False)]
    assert registry.subscriber_counts() == []


def test_heartbeats_follow_the_clock_and_can_be_disabled():
    clock = Clock()
    registry = ChannelRegistry(clock, heartbeat=15)
    sub = Recorder()
    registry.attach(sub, ["a"])
    registry.start()
    clock.advance(14)
    assert sub.beats == 0
    clock.advance(1)
    assert sub.beats == 1
    clock.advance(15)
    clock.advance(15)
    assert sub.beats == 3
    silent = ChannelRegistry(clock, heartbeat=0)
    quiet = Recorder()
    silent.attach(quiet, ["a"])
    silent.start()
    clock.advance(100)
    assert quiet.beats == 0


def test_stop_closes_every_subscriber():
    registry = ChannelRegistry(Clock())
    subs = [Recorder() for _ in range(2)]
    for sub in subs:
        registry.attach(sub, ["a"])
    registry.stop()
    assert all(sub.closed for sub in subs)


def test_counters_and_subscriber_counts():
    registry = ChannelRegistry(Clock())
    registry.attach(Recorder(), ["a", "b"])
    registry.attach(Recorder(), ["a"])
    registry.deliver(event("a"))
    registry.deliver(event("c", 2))
    registry.flush()
    assert registry.subscriber_counts() == [("a", 2), ("b", 1)]
    assert registry.counters.events_published == 2
    assert registry.counters.deliveries == 2
    assert registry.connections == 2


def test_a_turn_of_one_channel_is_one_joined_write_and_order_is_kept():
    registry = ChannelRegistry(Clock())
    ab, b_only = Recorder(), Recorder()
    registry.attach(ab, ["a", "b"])
    registry.attach(b_only, ["b"])
    events = [event("a", 1, "a1"), event("a", 2, "a2"), event("b", 3, "b3"), event("a", 4, "a4")]
    for ev in events:
        registry.deliver(ev)
    registry.clock.advance(0)
    # a1+a2 joined; the switch to b flushed them first; then b3; then a4
    assert ab.frames == [events[0].frame + events[1].frame, events[2].frame, events[3].frame]
    assert b_only.frames == [events[2].frame]
    assert registry.counters.deliveries == 2 + 2 + 1


def test_the_pattern_index_finds_exactly_what_the_patterns_match():
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cyclone_sse.channels import PatternIndex, compile_pattern
    parts = st.text(alphabet="ab.:", min_size=0, max_size=3)
    patterns = st.lists(st.builds(lambda a, b, c: f"{a}*{b}" + (f"*{c}" if c else ""),
                                  parts, parts, parts), max_size=12, unique=True)

    @settings(max_examples=200, deadline=None)
    @given(patterns, st.lists(st.text(alphabet="ab.:", min_size=1, max_size=6), max_size=8),
           st.data())
    def check(found, channels, data):
        index = PatternIndex()
        for pattern in found:
            index.add(pattern)
        gone = data.draw(st.lists(st.sampled_from(found), unique=True) if found
                         else st.just([]))
        for pattern in gone:
            index.remove(pattern)
        kept = [p for p in found if p not in gone]
        assert len(index) == len(kept)
        for channel in channels:
            expected = {p for p in kept if compile_pattern(p).match(channel)}
            assert set(index.matching(channel)) == expected
            assert all(re.fullmatch(".*".join(map(re.escape, p.split("*"))), channel)
                       for p in expected)

    check()
