"""The Twisted side of the HTTP/1.1 layer: one client connection, read into requests
(heads by ``cyclone_sse.http.parse``), each handed, complete and one at a time, to the
route its application names, with the limits and timeouts a public push server needs.

It knows no handler: the application gives it ``routes`` (``(method, path)`` to a
callable taking ``(application, request)`` and returning something to ``run()``) and is
itself called with any other request (a cyclone ``Application`` then finds its handler).
Requests are cyclone ``HTTPRequest`` objects, and this connection offers what cyclone's
requests and handlers use of theirs (``write``, ``finish``, ``notifyFinish``,
``transport``, ``xheaders``, ``no_keep_alive``), so an ``--app``'s cyclone handlers run
unchanged.  The connection:

* answers malformed or ambiguous requests with a clear status and a one-line log (what
  ``parse_head`` refuses; lines over ``MAX_LINE`` bytes; over ``MAX_HEADER_LINES``);
* times every phase: the request line and headers (``--header-timeout``), the body
  (``--body-timeout``), the wait for the next request on a kept-alive connection
  (``--idle-timeout``);
* handles pipelined requests one at a time, in order (their answers joined into one
  send), and refuses (by closing) anything a client sends behind a request that became
  an event stream — it is never written into the stream;
* counts open connections (``ConnectionLimits``): past ``--max-connections`` (or
  ``--max-per-address``) a request gets a real ``503`` with ``Retry-After`` — except
  the reserved paths (health, statistics, publishes), for which a reserve of
  connections is kept; past the reserve a connection is answered ``503`` at once;
* can become an event stream (``start_streaming``) or carry another protocol
  (``upgrade``: a WebSocket).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from http.client import responses
from typing import Any

from cyclone.httpserver import HTTPRequest
from cyclone.httputil import parse_multipart_form_data
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from cyclone_sse.http.parse import MAX_HEADER_LINES, Head, parse_form, parse_head, parse_query
from cyclone_sse.http.response import log_access
from cyclone_sse.limits import RETRY_AFTER, ConnectionLimits
from cyclone_sse.sockets import direct_socket, write_now

log = Logger()

#: Bytes in one request line or header line.
MAX_LINE = 16384
#: Bytes of pipelined requests buffered while the one before them is being answered;
#: past it the connection stops being read until then.
MAX_PIPELINED = 64 * 1024

#: What the connection calls for a route: ``(application, request)`` -> a runner.
Route = Callable[[Any, HTTPRequest], Any]


class LeanRequest(HTTPRequest):
    """cyclone's ``HTTPRequest``, built without its constructor's per-request work (a
    TLS check through zope's ``providedBy``, a query parse of an empty query, the
    ``X-Real-Ip`` lookups): the connection knows its scheme once, and a connection
    behind ``xheaders`` builds cyclone's own.  It sets every attribute that
    constructor sets (tests/test_quality.py compares them)."""

    def __init__(self, connection: Any, method: str, uri: str, version: str,
                 headers: Any, remote_ip: str, protocol: str) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.body = b""
        self.remote_ip = remote_ip
        self.protocol = protocol
        self.host = dict.get(headers, "Host") or "127.0.0.1"
        self.files: dict[str, Any] = {}
        self.connection = connection
        self._start_time = time.time()
        self._finish_time = None
        self.path, _, self.query = uri.partition("?")
        self.arguments = parse_query(self.query) if self.query else {}


class HTTPConnection(Protocol):
    """One client connection: requests read, limited, timed and handed on in order."""

    #: A TCP or TLS transport (Protocol types it Optional: it is set before any call).
    transport: Any
    #: The request being read or answered (None between requests).
    request: Any = None
    streaming = False   # a response now owns the connection (see start_streaming)
    closing = False     # rejected: whatever else arrives is ignored
    upgraded: Any = None  # the protocol this connection now carries (upgrade)
    #: Told ``on_connection_close()`` when the connection ends (a lean stream or poll).
    lean_stream: Any = None
    held_stream = False  # a handler's stream holds the connection (hold_stream)
    #: cyclone's: a handler sets it to close the connection after its answer.
    no_keep_alive = False

    def connectionMade(self) -> None:
        app = self.factory
        self.app = app
        self.settings = app.settings_obj
        self.max_body = self.settings.max_body
        self.counters = app.registry.counters
        self.registry = app.registry
        self.clock = app.clock
        self.routes: dict[tuple[str, str], Route] = app.routes
        self.xheaders = bool(app.settings.get("xheaders", False))
        self._buffer = b""  # read and not taken yet
        self._scanned = 0  # (of an incomplete head: where its current line starts)
        self._lines = 0  # (of an incomplete head: complete lines so far)
        self._length = 0  # of the body being waited for
        self._busy = False  # a request is being answered: nothing more is parsed
        self._taking = False  # _take_requests is running (it takes what comes next)
        self._stopped_reading = False  # the transport was paused while busy
        self._reading = False  # a read is being handled (answers may wait in _out)
        self._out: list[bytes] = []  # answers held until the read is handled (write)
        self._answer_waits = False  # _answers_after_fan_out is due
        self._finish_callback: defer.Deferred[Any] | None = None
        self._timer: Any = None
        self._phase = ""
        self._limit = 0.0
        self._armed = False
        self.limits: ConnectionLimits = app.connection_limits
        self.address = str(getattr(self.transport.getPeer(), "host", ""))
        self.socket = direct_socket(self.transport)
        self.scheme = "https" if interfaces.ISSLTransport.providedBy(self.transport) \
            else "http"
        self.over_limit = self.limits.admit(self.address)
        if self.over_limit and self.limits.beyond_reserve():
            self.reject(503, self.over_limit, logged=True)  # not even the reserve is left
            return
        self._arm(self.settings.header_timeout, "request headers")

    def connectionLost(self, reason: Any = None) -> None:
        if self.upgraded is not None:
            self.upgraded.connectionLost(reason)
        if self.lean_stream is not None:
            self.lean_stream.on_connection_close()
        self._stop_timer()
        self.limits.release(self.address)
        self.request = None  # (a route answering later finds its client gone)
        if self._finish_callback is not None:
            callback, self._finish_callback = self._finish_callback, None
            callback.callback(reason.getErrorMessage() if reason is not None else None)

    # input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._reading:  # (answering what was pipelined: the outer call sends)
            self._received(data)
            return
        # Answers to requests pipelined in this read are sent together once it is
        # handled: one send() instead of one per request (see ``write``).
        self._reading = True
        try:
            self._received(data)
        finally:
            self._reading = False
            if self._out:
                self._send_out_after_fan_out()

    def _received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.dataReceived(data)
            return
        if self.closing:
            return
        if self.streaming:
            # An event stream owns the connection: a client has nothing to send on it
            # (blank lines aside).  Anything else would be a pipelined request, which
            # cannot be answered inside the stream: refuse by closing (the client
            # resumes with Last-Event-ID).
            if data.strip(b"\r\n"):
                self._refuse_behind_stream()
            return
        buffer = self._buffer + data if self._buffer else data
        self._buffer = buffer
        if self._busy:
            if len(buffer) > MAX_PIPELINED and not self._stopped_reading:
                self._stopped_reading = True
                self.transport.pauseProducing()  # read again once the answer is out
            return
        self._take_requests()

    def _take_requests(self) -> None:
        """Parse and hand on the requests in the buffer, until one is being answered
        (it may be answered at once: then the next is taken, in this loop rather than
        one call deeper per pipelined request) or one is incomplete."""
        self._taking = True
        try:
            self._take_each()
        finally:
            self._taking = False

    def _take_each(self) -> None:
        while not self._busy and not self.closing and not self.streaming and \
                self.upgraded is None:
            if self.request is not None:  # a head was read; its body is awaited
                if len(self._buffer) < self._length:
                    return
                body = self._buffer[:self._length]
                self._buffer = self._buffer[self._length:]
                self._on_body(body)
                continue
            if not self._buffer:
                return
            if not self._read_head():
                return

    def _read_head(self) -> bool:
        """Take one head from the buffer: False while it is incomplete (or refused)."""
        buffer = self._buffer
        if self._scanned == 0 and buffer[:2] == b"\r\n":
            # RFC 9112 2.2: empty lines before a request are ignored
            buffer = self._buffer = buffer.lstrip(b"\r\n") if buffer.strip(b"\r\n") \
                else b""
            if not buffer:
                return False
        end = buffer.find(b"\r\n\r\n", max(self._scanned - 2, 0))
        if end < 0:
            # (a head that comes whole is not timed: nothing is awaited)
            if self._phase != "request headers":
                self._arm(self.settings.header_timeout, "request headers")
            self._scan_partial_head()
            return False
        head = buffer[:end + 2]  # (each line with its CRLF)
        lines = head.split(b"\r\n")
        if len(lines) - 1 > MAX_HEADER_LINES:
            self.reject(431, "too many header lines")
            return False
        if max(map(len, lines)) > MAX_LINE:
            self.reject(431, f"request line or header longer than {MAX_LINE} bytes")
            return False
        self._buffer = buffer[end + 4:]
        self._scanned = self._lines = 0
        self._on_head(head)
        return True

    def _scan_partial_head(self) -> None:
        """Hold an incomplete head to the line limits as it comes (each byte is looked
        at once, however slowly the head arrives)."""
        buffer, start = self._buffer, self._scanned
        while True:
            eol = buffer.find(b"\r\n", start)
            if eol < 0:
                eol = len(buffer)
            if eol - start > MAX_LINE:
                self.reject(431, f"request line or header longer than {MAX_LINE} bytes")
                return
            if eol == len(buffer):
                break
            self._lines += 1
            start = eol + 2
        self._scanned = start
        if self._lines > MAX_HEADER_LINES:
            self.reject(431, "too many header lines")

    def _on_head(self, data: bytes) -> None:
        head = parse_head(data, self.max_body, self.over_limit)
        if not isinstance(head, Head):
            self.reject(*head)
            return
        length, method, uri, version, headers = head
        if self.xheaders:
            self.request = HTTPRequest(connection=self, method=method, uri=uri,
                                       version=version, headers=headers,
                                       remote_ip=self.address)
        else:
            self.request = LeanRequest(self, method, uri, version, headers, self.address,
                                       self.scheme)
        if not length:
            self._dispatch(self.request)
            return
        buffer = self._buffer
        if len(buffer) == length:  # (the whole body came with the head: taken at once)
            self._buffer = b""
            self._on_body(buffer)
            return
        if len(buffer) > length:  # (and more: a pipelined request)
            self._buffer = buffer[length:]
            self._on_body(buffer[:length])
            return
        self._length = length
        if dict.get(headers, "Expect") == "100-continue":
            self._send_out()
            self.transport.write(b"HTTP/1.1 100 (Continue)\r\n\r\n")
        self._arm(self.settings.body_timeout, "request body")

    def _on_body(self, data: bytes) -> None:
        """A request's whole body: form fields read (strictly UTF-8: raw bytes and
        %-escapes alike; blank values dropped, as cyclone does) before it is handed on."""
        request = self.request
        request.body = data
        content_type = dict.get(request.headers, "Content-Type", "")
        if request.method in ("POST", "PATCH", "PUT"):
            if content_type.startswith("application/x-www-form-urlencoded"):
                try:
                    pairs = parse_form(data.decode("utf-8"))
                except UnicodeDecodeError:
                    self.reject(400, "form body is not valid UTF-8")
                    return
                arguments = request.arguments
                for name, value in pairs:
                    arguments.setdefault(name, []).append(value)
            elif content_type.startswith("multipart/form-data"):  # (an --app's upload)
                for field in content_type.split(";"):
                    name, _, value = field.strip().partition("=")
                    if name == "boundary" and value:
                        parse_multipart_form_data(value.encode(), data, request.arguments,
                                                  request.files)
                        break
        self._dispatch(request)

    # one request at a time ---------------------------------------------------------

    def _dispatch(self, request: HTTPRequest) -> None:
        """The request is complete: nothing more is parsed until it is answered, so a
        pipelined request is answered after it, in order.  Its route's runner answers
        it, or the application's handler does."""
        self._disarm()
        self._busy = True
        route = self.routes.get((request.method, request.path))
        if route is not None:
            route(self.app, request).run()
        else:
            self.app(request)

    def answer(self, chunk: bytes, status: int = 200) -> None:
        """A route's whole answer (of ``status``) to the request being handled: written,
        the request finished, its --access-log line written."""
        self.write(chunk)
        self.request._finish_time = time.time()
        if self.settings.access_log:
            log_access(self.request, status)
        self._finish_request()

    def finish(self) -> None:
        """cyclone's: the request in hand is answered."""
        if self.request is not None:
            self._finish_request()

    def _finish_request(self) -> None:
        # Keep-alive: an HTTP/1.1 request keeps the connection unless it says
        # "Connection: close"; an HTTP/1.0 one only with "Connection: Keep-Alive", and
        # then only with a Content-Length or as a GET or HEAD (tests/test_hardening.py)
        request = self.request
        asked = dict.get(request.headers, "Connection")
        if self.no_keep_alive:
            close = True
        elif request.version == "HTTP/1.1":
            close = asked == "close"
        else:
            close = asked != "Keep-Alive" or not (
                "Content-Length" in request.headers or request.method in ("HEAD", "GET"))
        if self._finish_callback is not None:
            callback, self._finish_callback = self._finish_callback, None
            callback.callback(None)
        self.request = None
        if close:
            self.transport.loseConnection()
        if self.streaming or self.transport.disconnecting:
            self._send_out()  # (the last answers: nothing more is read)
            return
        self._busy = False
        self._arm(self.settings.idle_timeout, "")
        if self._stopped_reading:
            self._stopped_reading = False
            self.transport.resumeProducing()
        if self._buffer and not self._taking:
            self.dataReceived(b"")  # answer what was pipelined meanwhile

    def notifyFinish(self) -> defer.Deferred[Any]:
        """cyclone's: a Deferred fired when the request in hand is finished or the
        connection is lost.  Once upgraded, the request was finished by the upgrade:
        what its handler asks after that (cyclone's ``_execute_handler`` asks once
        ``get`` returns) is a Deferred that never fires, so the handler is not kept; so
        too once a stream holds the connection (``hold_stream``: the stream is told)."""
        if self.upgraded is not None or self.held_stream:
            return defer.Deferred()
        if self._finish_callback is None:
            self._finish_callback = defer.Deferred()
        return self._finish_callback

    def start_streaming(self) -> None:
        """A handler now owns the connection for an event stream."""
        self.streaming = True
        # no timer is needed again: not left in the reactor's heap, where each of
        # thousands of streams would make every callLater dearer
        self._stop_timer()
        self._send_out()
        if self._buffer.strip(b"\r\n"):
            self._refuse_behind_stream()

    def hold_stream(self, stream: Any) -> None:
        """A handler's stream owns the connection from now on (after ``start_streaming``):
        ``stream.on_connection_close()`` is told when the connection ends, and the
        request and its cyclone handler are let go (kept, they held ~3 KB a stream)."""
        self.lean_stream = stream
        self.held_stream = True
        self._finish_callback = None
        self.request = None

    def upgrade(self, protocol: Any, response: bytes) -> None:
        """Carry ``protocol`` (a WebSocket connection) from now on: ``response`` (the
        101) is written, then the protocol gets whatever the client sends.  This
        connection stays the transport's protocol (its limits are released when it
        closes)."""
        self.streaming = True
        self._stop_timer()  # (as for a stream)
        self.upgraded = protocol
        if self.settings.access_log and self.request is not None:
            log_access(self.request, 101)
        # The upgrading request and its handler are done with: nothing is answered or
        # notified for them again (see ``notifyFinish``; a handler an --app hooks stays
        # on with ``protocol``).  Kept, they held ~2.4 KB per WebSocket connection.
        self._finish_callback = None
        self.request = None
        rest, self._buffer = self._buffer, b""  # what the client sent after its handshake
        self._send_out()
        self.transport.write(response)
        protocol.makeConnection(self.transport)
        if rest:
            protocol.dataReceived(rest)

    # output ------------------------------------------------------------------------

    def write(self, chunk: bytes) -> None:
        """An answer, sent at once when it can be; while more pipelined requests of this
        read wait behind it, kept until the read is handled (``_send_out``); while
        events wait for their fan-out at the end of this reactor turn, kept until they
        are out (``_send_out_after_fan_out``)."""
        if self._reading and self._buffer:
            self._out.append(chunk)
            return
        if self.registry.fan_out_pending:
            self._out.append(chunk)
            self._send_out_after_fan_out()
            return
        if self._out:
            self._out.append(chunk)
            chunk = b"".join(self._out)
            self._out = []
        write_now(self.transport, self.socket, chunk)

    def _send_out_after_fan_out(self) -> None:
        """The answers go out after the events queued in this turn are fanned out: a
        publisher that waits for its answer is held back while the daemon fans out,
        instead of its next events queueing behind fan-outs (at 10,000 subscribers,
        p50 107 -> 38 ms), and publishes read together still go out joined."""
        if not self.registry.fan_out_pending:
            self._send_out()
        elif not self._answer_waits:
            self._answer_waits = True
            self.registry.after_fan_out(self._answers_after_fan_out)

    def _answers_after_fan_out(self) -> None:
        self._answer_waits = False
        self._send_out()

    def _send_out(self) -> None:
        """Send the answers ``write`` kept; called before anything else is written."""
        if self._out:
            chunk = b"".join(self._out)
            self._out = []
            write_now(self.transport, self.socket, chunk)

    def _refuse_behind_stream(self) -> None:
        self.counters.refused_pipelined += 1
        if self.counters.refused_pipelined in (1, 1000) or \
                self.counters.refused_pipelined % 100000 == 0:
            log.info("closed a stream whose client sent another request on it "
                     "({count} so far)", count=self.counters.refused_pipelined)
        self.closing = True
        self.transport.loseConnection()

    # timeouts ----------------------------------------------------------------------

    def _arm(self, seconds: float, phase: str) -> None:
        """Time ``phase`` ("" for the idle wait between kept-alive requests).  One timer
        per connection, moved rather than replaced: a request arms it three times."""
        self._phase = phase
        self._limit = seconds
        self._armed = bool(seconds)
        if not seconds:
            return
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self._timer = self.clock.callLater(seconds, self._timed_out)

    def _disarm(self) -> None:
        self._armed = False  # (the timer stays; when it fires it finds nothing to do)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if not self._armed:
            return
        seconds, phase = self._limit, self._phase
        if self.request is None and not self._buffer:
            # nothing of a request: an idle connection (or one that never spoke)
            self.closing = True
            self.transport.loseConnection()
            return
        self.counters.request_timeouts += 1
        if self.counters.request_timeouts in (1, 1000) or \
                self.counters.request_timeouts % 100000 == 0:
            log.info("closing connections too slow to send a request ({count} so far; "
                     "this one: {phase} not received within {seconds:g} s)",
                     count=self.counters.request_timeouts, phase=phase, seconds=seconds)
        self.reject(408, f"{phase or 'request'} not received within {seconds:g} s",
                    logged=True)

    # refusals ----------------------------------------------------------------------

    def reject(self, status: int, message: str, logged: bool = False) -> None:
        """Answer a request we cannot parse or accept, then close the connection."""
        retry = ""
        if status == 503:  # over a connection limit: one log line per episode
            self.limits.refuse(message)
            logged, retry = True, f"Retry-After: {RETRY_AFTER}\r\n"
        if not logged:
            peer = self.transport.getPeer()
            log.warn("rejected request from {peer}: {status} {message}",
                     peer=getattr(peer, "host", peer), status=status, message=message)
        self._disarm()
        body = json.dumps({"error": message, "status": status}).encode()
        head = (f"HTTP/1.1 {status} {responses.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                "X-Content-Type-Options: nosniff\r\n"
                f"{retry}Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self._send_out()
        self.transport.write(head + body)
        self.closing = True  # ignore whatever else arrives
        self._buffer = b""
        self.request = None
        self.transport.loseConnection()


__all__ = ["HTTPConnection", "HTTPRequest", "LeanRequest", "Route"]
