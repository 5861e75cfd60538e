import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyclone_sse.errors import InvalidEvent
from cyclone_sse.event import (
    Event,
    EventId,
    encode,
    encode_position,
    frames,
    parse_stream,
    tagged_frames,
)

text = st.text(st.characters(blacklist_categories=("Cs",)))
field_text = st.text(st.characters(blacklist_categories=("Cs",),
                                   blacklist_characters="\r\n\x00"), min_size=1)


def normalize_breaks(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


@given(data=text, event_id=field_text, name=st.one_of(st.none(), field_text))
def test_a_browser_parser_sees_exactly_what_was_published(data, event_id, name):
    parsed = list(parse_stream(encode(event_id, data, name).decode("utf-8")))
    assert parsed == [{"id": event_id, "event": name or "message",
                       "data": normalize_breaks(data)}]


def test_every_line_break_style_becomes_its_own_data_line():
    assert encode("1", "a\r\nb\rc\nd") == b"id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_empty_data_still_dispatches_an_event():
    assert list(parse_stream(encode("7", "").decode())) == [
        {"id": "7", "event": "message", "data": ""}]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "x\r\nevent: evil"])
def test_field_injection_through_id_or_event_is_refused(bad):
    with pytest.raises(InvalidEvent):
        encode(bad, "data")
    with pytest.raises(InvalidEvent):
        encode("1", "data", bad)


def test_the_position_event_carries_the_id_in_its_data_too():
    stream = (encode_position("ep-5") + encode(None, "x")).decode()
    assert list(parse_stream(stream)) == [
        {"id": "ep-5", "event": "stream-open", "data": '{"lastEventId": "ep-5"}'},
        {"id": "ep-5", "event": "message", "data": "x"}]


def test_line_breaks_reach_every_transport_as_eventsource_delivers_them():
    event = Event("c", "a\r\nb\rc\nd", EventId("e", 1))
    assert event.data == "a\nb\nc\nd" and event.as_json()["data"] == "a\nb\nc\nd"
    assert [e["data"] for e in parse_stream(event.frame.decode())] == ["a\nb\nc\nd"]


def test_channel_aware_frames_name_the_channel_and_are_built_once_per_batch():
    named = Event("news.eu", "x", EventId("e", 1), "score")
    plain = Event("user:42", "y", EventId("e", 2))
    assert named.tagged_frame == b"event: channel\ndata: news.eu\n\n" + named.frame
    assert list(parse_stream((named.tagged_frame + plain.tagged_frame).decode())) == [
        {"id": "", "event": "channel", "data": "news.eu"},
        {"id": "e-1", "event": "score", "data": "x"},
        {"id": "e-1", "event": "channel", "data": "user:42"},
        {"id": "e-2", "event": "message", "data": "y"}]
    assert named.tagged_frame is named.tagged_frame
    batch = [named, plain]
    assert tagged_frames(batch) is tagged_frames(batch)  # one join for every stream
    assert tagged_frames(batch) == frames(batch, tagged=True)
    assert frames(batch) == named.frame + plain.frame
