"""The Redis link's own command path (``send_encoded``): its encoding, its order among
txredisapi's commands and its reply timeout, against a Clock and against real Redis."""

import secrets

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from cyclone_sse.links.redis import (
    RedisAddress,
    RedisLink,
    ReplyTimeout,
    _Factory,
    encode_command,
)
from tests.services import REDIS, require


def test_commands_are_encoded_as_arrays_of_bulk_strings():
    assert encode_command("SET", "k\u00e9", 5, b"\r\n") == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$1\r\n5\r\n$2\r\n\r\n\r\n")
    assert encode_command() == b"*0\r\n"


def connected(timeout: float = 1.0) -> tuple:
    clock = Clock()
    factory = _Factory(RedisAddress("127.0.0.1", 6379), None, clock, timeout)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return clock, protocol, transport


def test_an_encoded_command_goes_out_as_is_and_gets_its_reply_in_order():
    clock, protocol, transport = connected()
    first = protocol.send_encoded(encode_command("GET", "a"))
    second = protocol.execute_command("GET", "b")  # (txredisapi's own, between ours)
    third = protocol.send_encoded(encode_command("GET", "c"))
    assert transport.value() == (encode_command("GET", "a") + encode_command("GET", "b")
                                 + encode_command("GET", "c"))
    protocol.dataReceived(b"$1\r\nA\r\n$1\r\nB\r\n-ERR no\r\n")
    assert first.result == b"A" and second.result == b"B"
    failure = third.result
    third.addErrback(lambda _: None)
    assert "no" in str(failure.value)
    clock.advance(5)
    assert not transport.disconnecting  # every reply came: nothing timed out


def test_a_reply_later_than_the_timeout_fails_every_waiting_command_and_aborts():
    clock, protocol, transport = connected(timeout=1.0)
    aborted = []
    transport.abortConnection = lambda: aborted.append(True)
    early = protocol.send_encoded(encode_command("GET", "a"))
    clock.advance(0.6)
    late = protocol.send_encoded(encode_command("GET", "b"))
    protocol.dataReceived(b"$1\r\nA\r\n")  # the first in time
    assert early.result == b"A"
    clock.advance(0.6)  # the second has waited 0.6 s: still in time
    assert not aborted and not late.called
    clock.advance(0.5)
    assert aborted == [True]
    failures = []
    late.addErrback(failures.append)
    assert failures[0].check(ReplyTimeout)


class TestRealRedis(unittest.TestCase):
    """``RedisLink.send`` on a real connection, mixed with txredisapi's commands."""

    def setUp(self):
        require(REDIS, "Redis")
        from twisted.internet import reactor
        self.link = RedisLink(reactor, RedisAddress(*REDIS), "test")
        self.link.startService()
        self.key = f"test-link-{secrets.token_hex(4)}"
        return self.link.when_ready(10)

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.link.command("DEL", self.key)
        yield self.link.stopService()

    @defer.inlineCallbacks
    def test_sent_commands_and_txredisapi_commands_keep_one_order(self):
        value = "d\u00e9j\u00e0 \r\n vu".encode() + bytes(range(256))
        replies = yield defer.gatherResults([
            self.link.send(encode_command("RPUSH", self.key, value)),
            self.link.command("RPUSH", self.key, "two"),
            self.link.send(encode_command("RPUSH", self.key, 3)),
            self.link.send(encode_command("LRANGE", self.key, 0, -1)),
        ])
        self.assertEqual(replies[:3], [1, 2, 3])  # (integer replies)
        self.assertEqual(replies[3], [value, b"two", b"3"])
