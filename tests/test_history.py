from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from cyclone_sse.history import GAP_EXPIRED, GAP_LIMIT, GAP_UNKNOWN, MemoryHistory
from cyclone_sse.interfaces import IHistory


def make(**kwargs):
    clock = Clock()
    clock.advance(1000)
    return MemoryHistory(clock, epoch="ep", **kwargs), clock


def append(history, channel, data, **kw):
    event, fresh = history.append(channel, data, **kw)
    assert fresh
    return event


def test_conforms_to_the_interface():
    verifyObject(IHistory, make()[0])


def test_ids_are_one_order_across_channels_and_short():
    history, _ = make()
    ids = [append(history, c, "x").id for c in ("a", "b", "a", "c")]
    assert ids == ["ep-1", "ep-2", "ep-3", "ep-4"]
    assert all(len(i) <= 128 for i in ids)


def test_one_id_resumes_all_channels_in_publish_order():
    history, _ = make()
    first = append(history, "a", "a1")
    for channel, data in [("b", "b1"), ("a", "a2"), ("c", "c1"), ("b", "b2")]:
        append(history, channel, data)
    replay = history.since(["a", "b"], first.id)
    assert [e.data for e in replay.events] == ["b1", "a2", "b2"]
    assert replay.gap is None
    assert replay.head_id == "ep-5"


def test_publishes_without_subscribers_are_kept_for_replay():
    history, _ = make()
    before = history.head_id
    append(history, "quiet", "nobody listened")
    assert [e.data for e in history.since(["quiet"], before).events] == ["nobody listened"]


def test_no_last_id_means_no_replay_but_a_head():
    history, _ = make()
    append(history, "a", "x")
    replay = history.since(["a"], None)
    assert replay.events == [] and replay.gap is None and replay.head_id == "ep-1"


def test_unknown_ids_are_signalled_and_what_is_retained_is_sent():
    history, _ = make()
    append(history, "a", "x")
    for bad in ("other-1", "ep-99", "ep-x", "garbage"):
        replay = history.since(["a"], bad)
        assert replay.gap == GAP_UNKNOWN
        assert [e.data for e in replay.events] == ["x"]


def test_count_retention_reports_expired_gap():
    history, _ = make(size=2)
    first = append(history, "a", "1")
    for n in "2345":
        append(history, "a", n)
    replay = history.since(["a"], first.id)
    assert replay.gap == GAP_EXPIRED
    assert [e.data for e in replay.events] == ["4", "5"]
    # A client that saw "3" lost nothing: the retained window starts right after it.
    assert history.since(["a"], "ep-3").gap is None


def test_age_retention_uses_the_clock():
    history, clock = make(ttl=10)
    first = append(history, "a", "old")
    clock.advance(11)
    append(history, "a", "new")
    replay = history.since(["a"], "ep-0")
    assert [e.data for e in replay.events] == ["new"]
    assert replay.gap == GAP_EXPIRED
    assert history.since(["a"], first.id).gap is None


def test_sweep_drops_expired_channels_and_remembers_the_loss():
    history, clock = make(ttl=10)
    append(history, "a", "old")
    clock.advance(11)
    history.sweep()
    assert history.stats() == {"channels": 0, "events": 0}
    assert history.since(["a"], "ep-0").gap == GAP_EXPIRED


def test_channel_cap_drops_least_recently_published():
    history, _ = make(channels=2)
    append(history, "a", "1")
    append(history, "b", "2")
    append(history, "c", "3")
    assert history.stats()["channels"] == 2
    assert history.since(["a"], "ep-0").gap == GAP_EXPIRED
    assert history.since(["a"], "ep-1").gap is None


def test_replay_limit_sends_the_newest_and_says_so():
    history, _ = make()
    for n in range(10):
        append(history, "a", str(n))
    replay = history.since(["a"], "ep-0", limit=3)
    assert [e.data for e in replay.events] == ["7", "8", "9"]
    assert replay.gap == GAP_LIMIT and replay.truncated


def test_patterns_replay_every_matching_channel():
    history, _ = make()
    append(history, "news.sport", "s")
    append(history, "weather", "w")
    append(history, "news.tech", "t")
    assert [e.data for e in history.since(["news.*"], "ep-0").events] == ["s", "t"]


def test_a_repeated_publisher_id_is_stored_once():
    history, _ = make()
    first, fresh = history.append("a", "x", publisher_id="msg-1")
    again, fresh_again = history.append("a", "x", publisher_id="msg-1")
    assert fresh and not fresh_again and again is first
    other, fresh_other = history.append("b", "x", publisher_id="msg-1")
    assert fresh_other and other.id != first.id


def test_a_publisher_id_is_forgotten_with_its_event():
    history, _ = make(size=1)
    history.append("a", "x", publisher_id="msg-1")
    history.append("a", "y")
    _, fresh = history.append("a", "x", publisher_id="msg-1")
    assert fresh
