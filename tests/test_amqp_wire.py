"""The AMQP hot-path frames (``links/amqp_wire.py``), read and written against txamqp's
own codec, and the link's heartbeat check on a Clock."""

import struct
from decimal import Decimal

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from txamqp import spec as txamqp_spec
from txamqp.client import TwistedDelegate
from txamqp.connection import Body, Frame, Header, Method
from txamqp.protocol import FrameReceiver

from cyclone_sse.links import amqp_wire
from cyclone_sse.links.amqp import _Client, find_spec
from cyclone_sse.links.amqp_wire import DeliveryReader, PublishFrames, TooLong, read_table
from tests.services import require_spec


@pytest.fixture(scope="module")
def spec():
    require_spec()
    return txamqp_spec.load(find_spec())


def frames_of(data: bytes) -> list[bytes]:
    """Whole frames (head, payload, frame end), as txamqp's reader cuts them."""
    found = []
    while data:
        size = struct.unpack("!I", data[3:7])[0]
        found.append(data[:8 + size])
        data = data[8 + size:]
    return found


def txamqp_frames(spec, *frames: Frame) -> bytes:
    """Frames as txamqp itself writes them."""
    writer = FrameReceiver(spec)
    return b"".join(writer._pack_frame(f) for f in frames)


def deliver_frames(spec, channel: int, key: str, body: bytes, chunk: int = 0,
                   **properties) -> bytes:
    basic = spec.classes.byname["basic"]
    deliver = Method(basic.methods.byname["deliver"], "ctag", 7, False, "exchange", key)
    parts = [Frame(channel, deliver), Frame(channel, Header(basic, 0, len(body), **properties))]
    step = chunk or len(body) or 1
    parts += [Frame(channel, Body(body[i:i + step])) for i in range(0, len(body), step)]
    return txamqp_frames(spec, *parts)


def read_all(reader: DeliveryReader, data: bytes) -> list[bool]:
    return [reader.take(f) for f in frames_of(data)]


def test_a_publish_is_what_txamqp_reads_as_basic_publish(spec):
    frames = PublishFrames(3, "events", {"x-cyclone-sse-origin": "me"})
    body = "h\u00e9llo ".encode() * 40
    data = frames.encode("news.sport", body, "\u00e9v\u00e9nement", "id-\u00e9", frame_max=64)
    reader = FrameReceiver(spec)
    decoded = [reader._unpack_frame(f) for f in frames_of(data)]
    method, header, *bodies = decoded
    assert {f.channel for f in decoded} == {3}
    assert method.payload.method.name == "publish"
    assert tuple(method.payload.args) == (0, "events", "news.sport", False, False)
    assert header.payload.size == len(body)
    assert header.payload.properties == {
        "headers": {"x-cyclone-sse-origin": "me"}, "message-id": "id-\u00e9",
        "type": "\u00e9v\u00e9nement"}
    assert len(bodies) == -(-len(body) // 56)  # frame_max less the 8 bytes of framing
    assert b"".join(f.payload.content for f in bodies) == body


def test_a_publish_without_name_or_id_and_an_empty_body(spec):
    data = PublishFrames(1, "x", {}).encode("c", b"")
    method, header = (FrameReceiver(spec)._unpack_frame(f) for f in frames_of(data))
    assert method.payload.method.name == "publish"
    assert header.payload.size == 0 and header.payload.properties == {"headers": {}}


def test_what_amqp_cannot_carry_is_refused_before_anything_is_written():
    frames = PublishFrames(1, "x", {})
    with pytest.raises(TooLong, match="event name longer than 255 bytes") as refused:
        frames.encode("c", b"x", "\u00e9" * 128)
    assert refused.value.field == "event"
    with pytest.raises(TooLong, match="event id longer than 255 bytes") as refused:
        frames.encode("c", b"x", None, "\u20ac" * 90)
    assert refused.value.field == "id"
    assert len(frames.encode("c", b"x", "\u00e9" * 127, "\u20ac" * 85)) > 0  # (254, 255)


def test_deliveries_written_by_txamqp_are_read_with_every_property(spec):
    got = []
    reader = DeliveryReader(5, got.append, max_body=10_000)
    properties = {
        "content-type": "text/plain", "content-encoding": "utf-8",
        "headers": {"a": "text", "n": 42},  # (what txamqp can write: S and I)
        "delivery-mode": 2, "priority": 9, "correlation-id": "corr",
        "reply-to": "back", "expiration": "60000", "message-id": "m-1",
        "timestamp": 1_700_000_000, "type": "update", "user-id": "guest",
        "app-id": "app", "reserved": "cl"}
    body = "d\u00e4ta ".encode() * 500
    data = deliver_frames(spec, 5, "news.sport", body, chunk=700, **properties)
    assert all(read_all(reader, data))
    [message] = got
    assert (message.routing_key, message.body, message.problem) == ("news.sport", body, None)
    assert message.properties == properties


def test_frames_that_are_not_deliveries_on_the_channel_are_left_to_txamqp(spec):
    got = []
    reader = DeliveryReader(5, got.append, max_body=100)
    basic = spec.classes.byname["basic"]
    consume_ok = txamqp_frames(spec, Frame(5, Method(basic.methods.byname["consume-ok"],
                                                     "ctag")))
    other_channel = deliver_frames(spec, 6, "k", b"x")
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert read_all(reader, consume_ok + other_channel + heartbeat) == [False] * 5
    # a delivery broken off by another method: that frame goes to txamqp, and the next
    # delivery is read whole
    broken = frames_of(deliver_frames(spec, 5, "k", b"x"))[0]
    assert read_all(reader, broken + consume_ok) == [True, False]
    assert read_all(reader, deliver_frames(spec, 5, "k", b"second")) == [True] * 3
    assert [m.body for m in got] == [b"second"]


def test_a_body_larger_than_max_body_is_counted_not_kept(spec):
    got = []
    reader = DeliveryReader(1, got.append, max_body=100)
    assert all(read_all(reader, deliver_frames(spec, 1, "k", b"x" * 1000, chunk=100)))
    assert all(read_all(reader, deliver_frames(spec, 1, "k", b"ok")))
    assert [(m.body, m.problem) for m in got] == [
        (b"", "larger than --max-body (100 bytes)"), (b"ok", None)]
    assert reader._parts == []


def table(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack("!I", len(body)) + body


def field(name: str, kind: bytes, value: bytes) -> bytes:
    return bytes((len(name),)) + name.encode() + kind + value


def test_a_table_may_hold_every_field_type_rabbitmq_and_py_amqp_send():
    data = table(
        field("t", b"t", b"\x01"), field("b", b"b", b"\xff"), field("B", b"B", b"\xff"),
        field("s", b"s", struct.pack("!h", -2)), field("u", b"u", struct.pack("!H", 65535)),
        field("I", b"I", struct.pack("!i", -3)), field("i", b"i", struct.pack("!I", 2**32 - 1)),
        field("l", b"l", struct.pack("!q", -2**40)), field("f", b"f", struct.pack("!f", 0.5)),
        field("d", b"d", struct.pack("!d", 1.25)), field("D", b"D", struct.pack("!Bi", 2, 314)),
        field("S", b"S", struct.pack("!I", 2) + "\u00e9".encode()),
        field("x", b"x", struct.pack("!I", 2) + b"\xff\x00"),
        field("T", b"T", struct.pack("!Q", 1_700_000_000)), field("V", b"V", b""),
        field("A", b"A", struct.pack("!I", 7) + b"V" + b"I" + struct.pack("!i", 5) + b"t\x00"),
        field("F", b"F", table(field("k", b"S", struct.pack("!I", 1) + b"v"))))
    values, end = read_table(data, 0, 0)
    assert end == len(data)
    assert values == {"t": True, "b": -1, "B": 255, "s": -2, "u": 65535, "I": -3,
                      "i": 2**32 - 1, "l": -2**40, "f": 0.5, "d": 1.25,
                      "D": Decimal("3.14"), "S": "\u00e9", "x": b"\xff\x00",
                      "T": 1_700_000_000, "V": None, "A": [None, 5, False], "F": {"k": "v"}}


@pytest.mark.parametrize("data, reason", [
    (table(field("z", b"Z", b"")), "unknown field type"),
    (struct.pack("!I", 50) + b"\x01", "longer than its frame"),
    (table(field("s", b"S", struct.pack("!I", 99) + b"ab")), "longer than its frame"),
])
def test_a_table_that_cannot_be_read_is_a_clear_error(data, reason):
    with pytest.raises(ValueError, match=reason):
        read_table(data, 0, 0)


def test_tables_nested_too_deep_are_refused_not_recursed():
    data = table(field("leaf", b"V", b""))
    for _ in range(amqp_wire.MAX_TABLE_DEPTH + 1):
        data = table(field("n", b"F", data))
    with pytest.raises(ValueError, match="nested deeper"):
        read_table(data, 0, 0)


def test_a_delivery_with_unreadable_headers_arrives_with_its_problem(spec):
    got = []
    reader = DeliveryReader(1, got.append, max_body=100)
    frames = frames_of(deliver_frames(spec, 1, "k", b"body", headers={"a": "b"}))
    head = bytearray(frames[1])
    head[head.index(b"S")] = ord("Z")  # (the one field's type: one no reader knows)
    assert read_all(reader, frames[0] + bytes(head) + frames[2]) == [True] * 3
    assert got[0].problem.startswith("unreadable properties: unknown field type")


def connected_client(spec, clock: Clock) -> tuple[_Client, StringTransport]:
    client = _Client(TwistedDelegate(), vhost="/", spec=spec, heartbeat=10, clock=clock)
    client.link = type("Link", (), {"lost": lambda *a: None})()
    transport = StringTransport()
    client.makeConnection(transport)
    client.started.fire()  # (as after connection.tune: the heartbeat checks begin)
    return client, transport


def test_deliveries_the_reader_takes_count_as_traffic_for_the_heartbeat_check(spec):
    clock = Clock()
    client, transport = connected_client(spec, clock)
    got = []
    client.reader = DeliveryReader(1, got.append, max_body=100)
    for _ in range(10):  # 50 s of deliveries, none of them seen by txamqp
        clock.advance(5)
        client.dataReceived(deliver_frames(spec, 1, "k", b"x"))
    assert len(got) == 10 and not transport.disconnecting
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(2)  # 31 s without a frame: 3 heartbeat intervals
    assert transport.disconnecting


def test_the_client_sends_frames_in_order_with_txamqps_own(spec):
    clock = Clock()
    client, transport = connected_client(spec, clock)
    transport.clear()
    client.send_heartbeat()  # (txamqp's, through its outgoing queue)
    client.send_now(b"ours")
    client.send_heartbeat()
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert transport.value() == heartbeat + b"ours" + heartbeat
