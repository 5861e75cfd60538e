"""History stores: the shared replay rule, and one contract every store passes, run
against the in-memory store and against the Redis store on a real Redis."""

import secrets

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cyclone_sse.event import Event, EventId, Position
from cyclone_sse.history import GAP_EXPIRED, GAP_LIMIT, GAP_UNKNOWN, MemoryHistory
from cyclone_sse.history.base import assemble, resume_point
from cyclone_sse.interfaces import IHistory, IStats
from tests.services import REDIS, delete_prefix, require

# the shared rule -------------------------------------------------------------------


def ev(seq, channel="a", epoch="ep"):
    return Event(channel, str(seq), EventId(epoch, seq))


def test_resume_point_places_only_ids_of_this_epoch_and_not_from_the_future():
    head = EventId("ep", 10)
    assert resume_point("ep-4", head) == (4, False)
    assert resume_point("ep-10", head) == (10, False)
    for unknown in ("ep-11", "other-4", "garbage", "ep-x"):
        assert resume_point(unknown, head) == (0, True), unknown


def test_assemble_merges_channels_in_publish_order_and_keeps_the_newest():
    head = EventId("ep", 9)
    tails = [[ev(1), ev(4), ev(9)], [], [ev(2, "b"), ev(3, "b")]]
    replay = assemble(head, tails, 0, unknown=False, expired=False)
    assert [e.seq for e in replay.events] == [1, 2, 3, 4, 9]
    assert (replay.gap, replay.head, replay.truncated) == (None, Position((head,)), False)
    limited = assemble(head, tails, 2, unknown=False, expired=False)
    assert [e.seq for e in limited.events] == [4, 9]
    assert (limited.gap, limited.truncated) == (GAP_LIMIT, True)


def test_assemble_reports_the_most_serious_gap():
    head = EventId("ep", 3)
    tails = [[ev(1), ev(2), ev(3)]]
    assert assemble(head, tails, 1, unknown=True, expired=True).gap == GAP_UNKNOWN
    assert assemble(head, tails, 1, unknown=False, expired=True).gap == GAP_EXPIRED
    assert assemble(head, tails, 1, unknown=False, expired=False).gap == GAP_LIMIT
    assert assemble(head, tails, 0, unknown=False, expired=False, truncated=True).gap == \
        GAP_LIMIT


# the contract ---------------------------------------------------------------------


class HistoryContract:
    """What every store must do.  A subclass provides ``make(**limits)`` (a Deferred
    firing with a ready store)."""

    def make(self, **limits):
        raise NotImplementedError

    @defer.inlineCallbacks
    def append(self, history, channel, data, **kw):
        event, fresh = yield defer.maybeDeferred(history.append, channel, data, **kw)
        self.assertTrue(fresh)
        return event

    def since(self, history, channels, last_id, limit=5000):
        return defer.maybeDeferred(history.since, channels, last_id, limit)

    @defer.inlineCallbacks
    def test_conforms_to_the_interfaces(self):
        history = yield self.make()
        verifyObject(IHistory, history)
        verifyObject(IStats, history)

    @defer.inlineCallbacks
    def test_ids_are_one_order_across_channels_and_short(self):
        history = yield self.make()
        events = []
        for channel in ("a", "b", "a", "c"):
            events.append((yield self.append(history, channel, "x")))
        first = events[0].seq
        assert [e.event_id for e in events] == [
            EventId(events[0].epoch, first + n) for n in range(4)]
        assert all(len(e.id) <= 128 for e in events)

    @defer.inlineCallbacks
    def test_one_id_resumes_all_channels_in_publish_order(self):
        history = yield self.make()
        first = yield self.append(history, "a", "a1")
        for channel, data in [("b", "b1"), ("a", "a2"), ("c", "c1"), ("b", "b2")]:
            last = yield self.append(history, channel, data)
        replay = yield self.since(history, ["a", "b"], first.id)
        assert [e.data for e in replay.events] == ["b1", "a2", "b2"]
        assert [e.channel for e in replay.events] == ["b", "a", "b"]
        assert replay.gap is None
        assert replay.head == Position((last.event_id,))

    @defer.inlineCallbacks
    def test_publishes_without_subscribers_are_kept_for_replay(self):
        history = yield self.make()
        before = (yield self.since(history, ["quiet"], None)).head
        yield self.append(history, "quiet", "nobody listened")
        replay = yield self.since(history, ["quiet"], str(before))
        assert [e.data for e in replay.events] == ["nobody listened"]
        assert replay.gap is None

    @defer.inlineCallbacks
    def test_no_last_id_means_no_replay_but_a_head(self):
        history = yield self.make()
        event = yield self.append(history, "a", "x")
        replay = yield self.since(history, ["a"], None)
        assert replay.events == [] and replay.gap is None and \
            replay.head == Position((event.event_id,))

    @defer.inlineCallbacks
    def test_unknown_ids_are_signalled_and_what_is_retained_is_sent(self):
        history = yield self.make()
        event = yield self.append(history, "a", "x")
        for bad in ("other-1", str(EventId(event.epoch, event.seq + 99)), "ep-x", "garbage"):
            replay = yield self.since(history, ["a"], bad)
            assert replay.gap == GAP_UNKNOWN, bad
            assert [e.data for e in replay.events] == ["x"]

    @defer.inlineCallbacks
    def test_count_retention_reports_expired_gap(self):
        history = yield self.make(size=2)
        events = []
        for n in "12345":
            events.append((yield self.append(history, "a", n)))
        replay = yield self.since(history, ["a"], events[0].id)
        assert replay.gap == GAP_EXPIRED
        assert [e.data for e in replay.events] == ["4", "5"]
        # A client that saw "3" lost nothing: the retained window starts right after it.
        assert (yield self.since(history, ["a"], events[2].id)).gap is None

    @defer.inlineCallbacks
    def test_channel_cap_drops_least_recently_published(self):
        history = yield self.make(channels=2)
        a = yield self.append(history, "a", "1")
        yield self.append(history, "b", "2")
        yield self.append(history, "c", "3")
        start = str(EventId(a.epoch, a.seq - 1))
        assert (yield self.since(history, ["a"], start)).gap == GAP_EXPIRED
        assert (yield self.since(history, ["a"], a.id)).gap is None
        # a pattern may have matched the dropped channel too
        assert (yield self.since(history, ["*"], start)).gap == GAP_EXPIRED

    @defer.inlineCallbacks
    def test_replay_limit_sends_the_newest_and_says_so(self):
        history = yield self.make()
        events = []
        for n in range(10):
            events.append((yield self.append(history, "a", str(n))))
        start = str(EventId(events[0].epoch, events[0].seq - 1))
        replay = yield self.since(history, ["a"], start, limit=3)
        assert [e.data for e in replay.events] == ["7", "8", "9"]
        assert replay.gap == GAP_LIMIT and replay.truncated

    @defer.inlineCallbacks
    def test_patterns_replay_every_matching_channel(self):
        history = yield self.make()
        first = yield self.append(history, "news.sport", "s")
        yield self.append(history, "weather", "w")
        yield self.append(history, "news.tech", "t")
        start = str(EventId(first.epoch, first.seq - 1))
        replay = yield self.since(history, ["news.*"], start)
        assert [e.data for e in replay.events] == ["s", "t"]
        assert replay.gap is None

    @defer.inlineCallbacks
    def test_a_repeated_publisher_id_is_stored_once(self):
        history = yield self.make()
        first, fresh = yield defer.maybeDeferred(history.append, "a", "x",
                                                 publisher_id="msg-1")
        again, fresh_again = yield defer.maybeDeferred(history.append, "a", "x",
                                                       publisher_id="msg-1")
        assert fresh and not fresh_again and again.id == first.id
        other, fresh_other = yield defer.maybeDeferred(history.append, "b", "x",
                                                       publisher_id="msg-1")
        assert fresh_other and other.id != first.id


    @defer.inlineCallbacks
    def test_bytes_are_bounded_per_channel_and_in_all_and_the_largest_give_first(self):
        history = yield self.make(size=0, max_bytes=100_000, channel_bytes=20_000)
        quiet = []
        for _ in range(3):
            quiet.append((yield self.append(history, "quiet", "q" * 1000)))
        for n in range(500):  # one publisher floods ten channels
            yield self.append(history, f"flood{n % 10}", "x" * 1000)
        held = history.stats()["bytes"]
        assert 50_000 < held <= 100_000
        start = str(EventId(quiet[0].epoch, quiet[0].seq - 1))
        # the quiet channel keeps its replay: the floods gave up theirs first
        replay = yield self.since(history, ["quiet"], start)
        assert [e.id for e in replay.events] == [e.id for e in quiet] and replay.gap is None
        kept = []
        for n in range(10):
            replay = yield self.since(history, [f"flood{n}"], start)
            assert replay.gap == GAP_EXPIRED
            kept.append(len(replay.events))
        assert 0 < max(kept) <= 20  # 20 of ~1.1 kB fit the per-channel budget
        assert max(kept) - min(kept) <= 3  # shared out evenly, within an event or so

    @defer.inlineCallbacks
    def test_a_wide_replay_merges_channels_newest_first_up_to_the_limit(self):
        history = yield self.make()
        first = None
        for n in range(500):
            event = yield self.append(history, f"c{n % 50}", str(n))
            first = first or event
        def at(n):
            return str(EventId(first.epoch, first.seq + n))
        replay = yield self.since(history, ["*"], at(-1), limit=7)
        assert [e.data for e in replay.events] == [str(n) for n in range(493, 500)]
        assert replay.gap == GAP_LIMIT and replay.truncated
        replay = yield self.since(history, ["c3"], at(400), limit=0)
        assert [e.data for e in replay.events] == ["403", "453"]
        replay = yield self.since(history, ["c1", "c2", "c*"], at(489), limit=0)
        assert [e.data for e in replay.events] == [str(n) for n in range(490, 500)]
        replay = yield self.since(history, ["*"], at(492), limit=7)
        assert replay.gap is None and not replay.truncated and len(replay.events) == 7


class TestMemoryHistory(HistoryContract, unittest.TestCase):
    def make(self, **limits):
        self.clock = Clock()
        self.clock.advance(1000)
        return defer.succeed(MemoryHistory(self.clock, epoch="ep", **limits))

    @defer.inlineCallbacks
    def test_age_retention_uses_the_clock(self):
        history = yield self.make(ttl=10)
        first = yield self.append(history, "a", "old")
        self.clock.advance(11)
        yield self.append(history, "a", "new")
        replay = history.since(["a"], "ep-0")
        assert [e.data for e in replay.events] == ["new"]
        assert replay.gap == GAP_EXPIRED
        assert history.since(["a"], first.id).gap is None

    @defer.inlineCallbacks
    def test_sweep_runs_as_a_service_and_remembers_the_loss(self):
        history = yield self.make(ttl=10)
        yield self.append(history, "a", "old")
        history.startService()
        self.clock.advance(11)
        assert history.stats()["events"] == 1  # not swept yet
        self.clock.advance(60)  # SWEEP_INTERVAL
        assert history.stats() == {"channels": 0, "events": 0, "bytes": 0}
        assert history.since(["a"], "ep-0").gap == GAP_EXPIRED
        yield history.stopService()
        assert not self.clock.getDelayedCalls()

    @defer.inlineCallbacks
    def test_a_publisher_id_is_forgotten_with_its_event(self):
        history = yield self.make(size=1)
        history.append("a", "x", publisher_id="msg-1")
        history.append("a", "y")
        _, fresh = history.append("a", "x", publisher_id="msg-1")
        assert fresh


    @defer.inlineCallbacks
    def test_its_own_bookkeeping_stays_bounded_under_the_byte_budget(self):
        """The heap that finds the largest channel gets an entry per append; it was
        compacted only once over budget, so a daemon under it grew without end."""
        history = yield self.make(size=100)
        for n in range(20_000):
            history.append(f"c{n % 3}", "x" * 50)
        assert history.bytes < history.max_bytes
        assert len(history._largest) <= 4 * 3 + 1024 + 1
        # still the largest first once over budget: compaction lost nothing
        history.max_bytes = history.bytes
        history.append("big", "y" * 5000)
        history.append("c0", "z")
        assert history.bytes <= history.max_bytes
        kept = {name: len(log.events) for name, log in history._logs.items()}
        assert kept["big"] == 1 and sum(kept.values()) < 300 + 2  # the c channels gave


class TestRedisHistory(HistoryContract, unittest.TestCase):
    """The same contract against a real Redis (127.0.0.1:6379), one key prefix per
    test, removed afterwards."""

    def setUp(self):
        require(REDIS, "Redis")
        self.prefix = "test-" + secrets.token_hex(4)
        self.addCleanup(delete_prefix, self.prefix)

    @defer.inlineCallbacks
    def make(self, **limits):
        from twisted.internet import reactor

        from cyclone_sse.history.redis import RedisHistory
        from cyclone_sse.links.redis import RedisAddress
        history = RedisHistory(reactor, RedisAddress(*REDIS), prefix=self.prefix, **limits)
        history.startService()
        self.addCleanup(history.stopService)
        yield history.link.when_ready()
        return history

    def redis(self, *command):
        from extras.publisher import RedisPublisher
        client = RedisPublisher(*REDIS)
        try:
            return client.command(*command)
        finally:
            client.close()

    def old_entry(self, channel, seq, data, age_ms):
        """An entry as an older cyclone-sse wrote it, ``age_ms`` in the past."""
        now_ms = int(self.redis("TIME")[0]) * 1000
        self.redis("XADD", f"{self.prefix}:ch:{channel}", f"{seq}-0", "d", data, "e", "",
                   "t", now_ms - age_ms)
        self.redis("ZADD", f"{self.prefix}:channels", now_ms - age_ms, channel)
        self.redis("SET", f"{self.prefix}:seq", seq)

    @defer.inlineCallbacks
    def test_an_older_layout_is_migrated_once_on_connect(self):
        self.redis("SET", f"{self.prefix}:epoch", "ep1")
        for seq, channel in enumerate(["news.a", "news.b", "news.a"], 1):
            self.old_entry(channel, seq, "x" * 100, 0)
        history = yield self.make()
        assert self.redis("GET", f"{self.prefix}:layout") == b"2"
        # channels are scored by their newest seq now, and weighed
        assert self.redis("ZSCORE", f"{self.prefix}:channels", "news.a") == b"3"
        assert int(self.redis("GET", f"{self.prefix}:bytes")) == 3 * (100 + 64)
        replay = yield self.since(history, ["news.*"], "ep1-0")
        assert [e.seq for e in replay.events] == [1, 2, 3] and replay.gap is None
        event = yield self.append(history, "news.b", "y")
        assert event.seq == 4 and history.stats()["bytes"] == 3 * 164 + 65

    @defer.inlineCallbacks
    def test_the_sweep_drops_idle_channels_and_their_bytes(self):
        self.old_entry("idle", 1, "i" * 50, 120_000)  # migrated: 114 bytes
        history = yield self.make(ttl=60)
        yield self.append(history, "fresh", "f")
        assert (yield history.sweep()) == 1
        assert self.redis("EXISTS", f"{self.prefix}:ch:idle") == 0
        assert int(self.redis("GET", f"{self.prefix}:bytes")) == 65
        assert self.redis("GET", f"{self.prefix}:dropped") == b"1"
        assert self.redis("ZRANGE", f"{self.prefix}:channels", 0, -1) == [b"fresh"]


class StreamCopyTests(unittest.SynchronousTestCase):
    """A daemon's copy of a RabbitMQ stream (``history.amqp_stream``): events stored at
    their offsets, ids the same for every daemon of the stream, a gap for what the
    stream had dropped before the daemon read it."""

    def copy(self, **bounds):
        from cyclone_sse.history.amqp_stream import StreamHistory, stream_epoch
        return StreamHistory(Clock(), epoch=stream_epoch("events"), **bounds)

    def test_ids_are_offsets_and_the_same_on_every_copy(self):
        one, other = self.copy(), self.copy()
        for copy in (one, other):
            copy.store(1, "a", "x", None, None)
            copy.skip(2)  # (a daemon's sync mark)
            copy.store(3, "b", "y", None, None)
        assert one.head == other.head and one.head.seq == 3
        replay = other.since(["a", "b"], str(EventId(one.epoch, 1)))
        assert [e.data for e in replay.events] == ["y"] and replay.gap is None

    def test_a_repeated_publisher_id_is_stored_once_and_the_head_moves(self):
        copy = self.copy()
        first, fresh = copy.store(1, "a", "x", None, "p1")
        again, fresh_again = copy.store(2, "a", "x", None, "p1")
        assert fresh and not fresh_again and again is first
        assert copy.head.seq == 2

    def test_what_the_stream_dropped_before_it_was_read_is_a_gap(self):
        copy = self.copy()
        copy.store(101, "a", "kept", None, None)  # (offsets 0-99 were gone)
        copy.store(102, "new", "also", None, None)
        gone = copy.since(["a"], str(EventId(copy.epoch, 50)))
        assert gone.gap == GAP_EXPIRED and [e.data for e in gone.events] == ["kept"]
        newer = copy.since(["new"], str(EventId(copy.epoch, 50)))
        assert newer.gap == GAP_EXPIRED
        fine = copy.since(["a", "new"], str(EventId(copy.epoch, 100)))
        assert fine.gap is None and [e.data for e in fine.events] == ["kept", "also"]

    def test_an_unknown_epoch_is_unknown(self):
        copy = self.copy()
        copy.store(1, "a", "x", None, None)
        assert copy.since(["a"], "ffffff-1").gap == GAP_UNKNOWN
