"""The request-head parser (``cyclone_sse/http/parse.py``) held against h11, a
maintained reference parser (python-hyper's, under wsproto), with generated heads:
what both accept reads the same; what h11 refuses, ours refuses; where ours refuses
what h11 lets through, it is one of the rules this daemon keeps on purpose."""

from __future__ import annotations

import string

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyclone_sse.http.parse import Head, parse_head

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
#: header names the generated heads leave to the cases below (framing and Host)
FRAMING = {"host", "content-length", "transfer-encoding"}

tokens = st.text(alphabet=TOKEN, min_size=1, max_size=10)
values = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)] + [" ", "\t"],
                 max_size=24).map(lambda v: v.strip(" \t"))
targets = st.text(alphabet=string.ascii_letters + string.digits + "-._~/?=&%+",
                  max_size=30).map(lambda t: "/" + t)
fields = st.lists(st.tuples(tokens.filter(lambda n: n.lower() not in FRAMING), values),
                  max_size=8)


def head_of(method: str, target: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} {version}", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def h11_reads(raw: bytes) -> h11.Request | None:
    """h11's reading of a request head: the Request, or None when it refuses it."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def ours(raw: bytes) -> Head | tuple[int, str]:
    """Ours, fed as the connection feeds it: each line of the head with its CRLF."""
    end = raw.find(b"\r\n\r\n")
    return parse_head(raw[:end + 2], max_body=1 << 20)


def same_reading(head: Head, request: h11.Request) -> bool:
    mine = [(name.lower(), value) for name, values in head.headers._as_list.items()
            for value in values]
    theirs = [(name.decode(), value.decode()) for name, value in request.headers]
    return (head.method, head.uri, head.version) == (
        request.method.decode(), request.target.decode(),
        "HTTP/" + request.http_version.decode()) and sorted(mine) == sorted(theirs)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(tokens, targets, st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), fields)
def test_a_well_formed_head_reads_as_h11_reads_it(method, target, version, headers):
    raw = head_of(method, target, version, [("Host", "example.org"), *headers])
    request = h11_reads(raw)
    head = ours(raw)
    assert request is not None
    assert isinstance(head, Head), head
    assert same_reading(head, request)


#: What a hostile client slips into a head: line breaks alone, NUL and other controls,
#: whitespace where none belongs, a colon, bytes that are not UTF-8.
HOSTILE = [b"\r", b"\n", b"\r\n", b"\x00", b"\x0b", b"\x7f", b" ", b"\t", b":", b"\r\n ",
           b"\xff", b"\r\n\r\n"]


def kept_on_purpose(raw: bytes) -> bool:
    """Heads ours refuses and h11 may read: a line break alone (h11 takes a bare LF as
    a line end; some proxies do not: a smuggling ingredient), obsolete line folding
    (RFC 9112 5.2 lets a server refuse it), a control character in a value, bytes that
    are not UTF-8, a repeated Host."""
    head = raw[:raw.find(b"\r\n\r\n") + 2]
    bare = head.replace(b"\r\n", b"")
    folded = b"\r\n " in head or b"\r\n\t" in head
    control = any((c < 0x20 and c != 9) or c == 0x7F for c in bare)
    return (folded or b"\n" in bare or b"\r" in bare or control or not _utf8(head)
            or head.lower().count(b"\nhost:") > 1)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(tokens, targets, fields, st.lists(st.tuples(st.integers(0, 10_000),
                                                   st.sampled_from(HOSTILE)),
                                         min_size=1, max_size=3))
def test_what_h11_refuses_ours_refuses_and_the_rest_reads_the_same(
        method, target, headers, insertions):
    raw = head_of(method, target, "HTTP/1.1", [("Host", "example.org"), *headers])
    body_start = len(raw) - 4
    for at, piece in insertions:  # somewhere in the head, before its blank line
        at %= body_start
        raw = raw[:at] + piece + raw[at:]
    if raw.find(b"\r\n\r\n") < 0:
        return  # no end of head: neither reads it yet
    request = h11_reads(raw)
    head = ours(raw)
    if request is None:
        assert not isinstance(head, Head), (raw, head)
    elif isinstance(head, Head):
        assert same_reading(head, request), raw
    else:
        assert kept_on_purpose(raw), (raw, head)


def test_framing_and_host_rules():
    """The framing rules h11 shares (one Host in HTTP/1.1, one length) and those this
    daemon adds (no Transfer-Encoding at all, a body limit)."""
    def read(*lines: str) -> Head | tuple[int, str]:
        return ours(("\r\n".join(["POST /publish HTTP/1.1", *lines]) + "\r\n\r\n").encode())

    assert read("Content-Length: 5")[0] == 400  # no Host
    assert read("Host: a", "Host: b")[0] == 400
    assert read("Host: a", "Content-Length: 5", "Content-Length: 6")[0] == 400
    assert read("Host: a", "Content-Length: 5", "Content-Length: 5").length == 5
    assert read("Host: a", "Content-Length: +5")[0] == 400
    assert read("Host: a", "Content-Length: ²")[0] == 400
    assert read("Host: a", "Transfer-Encoding: chunked")[0] == 411
    assert read("Host: a", "Transfer-Encoding: gzip")[0] == 501
    assert read("Host: a", "Transfer-Encoding: chunked", "Content-Length: 5")[0] == 400
    assert read("Host: a", "Content-Length: 2000000")[0] == 413
    assert read("Host: a", "X-A: 1\nContent-Length: 5")[0] == 400  # a bare LF
    assert parse_head(b"GET /x HTTP/1.1\r\nHost: a\r\n", 10, "full") == (503, "full")
    assert isinstance(parse_head(b"GET /healthz HTTP/1.1\r\nHost: a\r\n", 10, "full"), Head)


def test_the_daemon_answers_a_smuggling_head_with_a_clear_400():
    """Through the connection: a value with a bare LF that would read as a second
    Content-Length to a proxy taking LF as a line end gets 400 with its reason, and
    nothing is published."""
    import json

    from tests.memory import Connection, make_app
    app = make_app()
    conn = Connection(app)
    conn.protocol.dataReceived(b"POST /publish HTTP/1.1\r\nHost: a\r\nX-A: 1\nContent-Length: "
                               b"30\r\nContent-Length: 0\r\n\r\n")
    status, _, body = conn.head_and_body()
    assert status == 400 and "control character" in json.loads(body)["error"]
    assert app.registry.counters.events_published == 0
