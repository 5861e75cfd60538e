"""cyclone's HTTP connection with the limits a public push server needs (the Twisted
side of the HTTP layer: heads are read by ``cyclone_sse.http.parse``).

cyclone 1.3 buffers any request body, however large, is lenient about framing, waits
forever for slow clients, drops malformed requests without a word, and keeps parsing
input on a connection that is streaming.  This subclass:

* answers malformed or ambiguous requests with a clear status and a one-line log:
  whitespace before a header's colon, obsolete line folding, a control character (a bare
  CR or LF) in a header value, a method that is not a token, both ``Transfer-Encoding``
  and ``Content-Length`` (RFC 9112 6.1: a request-smuggling ingredient), conflicting
  lengths, an HTTP/1.1 request without ``Host``, any version but HTTP/1.0 and 1.1;
* times every phase: the request line and headers (``--header-timeout``), the body
  (``--body-timeout``), the wait for the next request on a kept-alive connection
  (``--idle-timeout``);
* handles pipelined requests one at a time, in order, and refuses (by closing) anything
  a client sends behind a request that became an event stream — it is never written
  into the stream;
* counts open connections (``ConnectionLimits``): past ``--max-connections`` (or
  ``--max-per-address`` from one client) a request gets a real ``503`` with
  ``Retry-After`` — except health checks, statistics and publishes, for which a reserve
  of connections is kept, so monitoring still sees a saturated daemon and its streams
  are still fed; past the reserve a connection is answered ``503`` at once, before the
  open-file limit is reached.
"""

from __future__ import annotations

import json
import time
from http.client import responses
from io import BytesIO
from typing import Any

from cyclone import httpserver
from cyclone.httpserver import HTTPRequest
from twisted.internet import defer, interfaces
from twisted.logger import Logger

from cyclone_sse.handlers.publish import LeanPublish, PublishHandler
from cyclone_sse.handlers.subscribe import LeanSubscribe, SubscribeHandler
from cyclone_sse.http.parse import MAX_HEADER_LINES, Head, parse_form, parse_head, parse_query
from cyclone_sse.http.response import log_access
from cyclone_sse.limits import RETRY_AFTER, ConnectionLimits
from cyclone_sse.sockets import direct_socket, write_now

log = Logger()

#: Bytes of pipelined requests buffered while the one before them is being answered;
#: past it the connection stops being read until then.
MAX_PIPELINED = 64 * 1024


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


class HTTPConnection(httpserver.HTTPConnection):
    """cyclone's connection, with strict parsing, limits and timeouts."""

    MAX_LENGTH = 16384  # bytes in one request or header line (LineReceiver)

    streaming = False   # a response now owns the connection (see start_streaming)
    closing = False     # rejected: whatever else arrives is ignored
    _reading = False    # a read is being handled (answers may wait in _out)
    _stopped_reading = False  # the transport was paused while an answer was pending
    upgraded: Any = None  # the WebSocket protocol this connection now carries (upgrade)
    lean_stream: Any = None  # the LeanSubscribe whose stream this connection carries
    _request: Any  # (cyclone's: the request being read or answered)
    _buffer: bytes  # (LineReceiver's: what was read and not parsed yet)
    _contentbuffer: Any
    _finish_callback: Any  # (cyclone's: notifyFinish's Deferred)
    no_keep_alive: bool  # (cyclone's)

    def connectionMade(self) -> None:
        super().connectionMade()
        app = self.factory
        self.settings = app.settings_obj
        self.max_body = self.settings.max_body
        self.counters = app.registry.counters
        self.clock = app.clock
        self.request_callback = self._dispatch
        self._header_lines = 0
        self._timer: Any = None
        self._phase = ""
        self._limit = 0.0
        self._armed = False
        self._waiting = True  # for the first byte of a request (no request under way)
        self._out: list[bytes] = []  # answers held until the read is handled (write)
        self._answer_waits = False  # _answers_after_fan_out is due
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

    def connectionLost(self, reason: Any) -> None:
        if self.upgraded is not None:
            self.upgraded.connectionLost(reason)
        if self.lean_stream is not None:
            self.lean_stream.on_connection_close()
        self._stop_timer()
        self.limits.release(self.address)
        super().connectionLost(reason)

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
        if self.paused and len(self._buffer) + len(data) > MAX_PIPELINED:
            self._stopped_reading = True
            self.transport.pauseProducing()  # read again once the answer is out
        if self._waiting and self.line_mode and not self.paused and not self._busyReceiving:
            if self._buffer:  # (what was pipelined behind the request just answered)
                data, self._buffer = self._buffer + data, b""
            if data[:1] not in (b"\r", b"\n"):
                end = data.find(b"\r\n\r\n")
                if end >= 0 and self._whole_head(data, end):
                    return
        super().dataReceived(data)

    def _whole_head(self, data: bytes, end: int) -> bool:
        """A request head that came whole in one read: handed to ``_on_headers`` at once
        instead of line by line (LineReceiver's loop and two ``lineReceived`` per line
        were a tenth of a publish).  False, with nothing done, for a head the line
        reader must judge: too many lines, or one too long."""
        head = data[:end + 2]  # (as cyclone joins it: each line with its CRLF)
        lines = head.split(b"\r\n")
        if len(lines) - 1 > MAX_HEADER_LINES or \
                max(map(len, lines)) > self.MAX_LENGTH:
            return False
        self._waiting = False
        # what follows (a body, a pipelined request) waits in LineReceiver's buffer, so
        # a stream that starts now sees it, as it would have line by line
        self._buffer = data[end + 4:]
        self._on_headers(head, inline=True)
        if self._buffer and not self.paused and not self.streaming and not self.closing:
            super().dataReceived(b"")  # (the body, or what comes next)
        return True

    def lineReceived(self, line: bytes) -> None:
        if self.streaming or self.closing:
            return
        if self._waiting and line:
            self._waiting = False
            if not self._phase:  # after an idle keep-alive wait, a request begins
                self._arm(self.settings.header_timeout, "request headers")
        if line:
            self._header_lines += 1
            if self._header_lines > MAX_HEADER_LINES:
                self.reject(431, "too many header lines")
                return
        else:
            self._header_lines = 0
            if self._waiting:
                return  # RFC 9112 2.2: an empty line before a request is ignored
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reject(431, f"request line or header longer than {self.MAX_LENGTH} bytes")

    def _on_headers(self, data: bytes, inline: bool = False) -> None:
        # cyclone's _on_headers, with the head parsed once: _check_head's parse is
        # reused (cyclone would split and parse the same bytes again)
        head = parse_head(data, self.max_body, self.over_limit)
        if not isinstance(head, Head):
            self.reject(*head)
            return
        length, method, uri, version, headers = head
        if self.xheaders:
            self._request = HTTPRequest(connection=self, method=method, uri=uri,
                                        version=version, headers=headers,
                                        remote_ip=self.address)
        else:
            self._request = LeanRequest(self, method, uri, version, headers, self.address,
                                        self.scheme)
        if length:
            if dict.get(headers, "Expect") == "100-continue":
                self._send_out()
                self.transport.write(b"HTTP/1.1 100 (Continue)\r\n\r\n")
            elif inline and len(self._buffer) >= length:
                # the whole body came with the head: taken at once (no raw mode, no
                # copy through a buffer, no second pass of the line reader)
                body, self._buffer = self._buffer[:length], self._buffer[length:]
                self._on_request_body(body)
                return
            self._arm(self.settings.body_timeout, "request body")
            self._contentbuffer = BytesIO()  # (length is at most --max-body)
            self.content_length = length
            self.setRawMode()
            return
        self.request_callback(self._request)

    def _on_request_body(self, data: bytes) -> None:
        # cyclone decodes urlencoded form bodies before any handler runs; here it is done
        # once, strictly: raw bytes and %-escapes alike must be UTF-8 (cyclone's own
        # parse would replace what is not)
        request = self._request
        content_type = dict.get(request.headers, "Content-Type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            super()._on_request_body(data)
            return
        try:
            pairs = parse_form(data.decode("utf-8"))
        except UnicodeDecodeError:
            self.reject(400, "form body is not valid UTF-8")
            return
        request.body = data
        if request.method in ("POST", "PATCH", "PUT"):  # (as cyclone: blank values dropped)
            arguments = request.arguments
            for name, value in pairs:
                arguments.setdefault(name, []).append(value)
        self.request_callback(request)

    # one request at a time ---------------------------------------------------------

    def _dispatch(self, request: HTTPRequest) -> None:
        """The request is complete: nothing more is parsed until it is answered, so a
        pipelined request is answered after it, in order.  ``POST /publish`` and
        ``GET /`` take the lean paths when the application serves them with the stock
        handlers (an --app's own handler classes are cyclone's), whatever the options;
        every other route is cyclone's."""
        self._disarm()
        self.paused = True  # (LineReceiver's own flag: stop splitting lines)
        if request.method == "POST" and request.path == "/publish" and self._lean():
            LeanPublish(self.factory, request).run()
            return
        if request.method == "GET" and request.path == "/" and self._lean("/"):
            LeanSubscribe(self.factory, request).run()
            return
        self.factory(request)

    def _lean(self, path: str = "/publish") -> bool:
        """Whether this application's ``path`` skips cyclone's handler machinery: its
        route is the stock handler (``PublishHandler``, ``SubscribeHandler``: an --app's
        subclass keeps cyclone's path).  The lean paths write their own --access-log
        lines (``answer``, ``upgrade``, a stream's end)."""
        app = self.factory
        cache = app.__dict__.setdefault("_lean_paths", {})
        lean = cache.get(path)
        if lean is None:
            stock = PublishHandler if path == "/publish" else SubscribeHandler
            # cyclone keeps its routes as (host pattern, [URLSpec]) pairs in .handlers
            specs = [spec for _, group in app.handlers for spec in group
                     if spec.regex.match(path)]
            lean = cache[path] = bool(specs and specs[0].handler_class is stock)
        return bool(lean)

    def answer(self, chunk: bytes, status: int = 200) -> None:
        """A lean path's whole answer (of ``status``) to the request being handled:
        written, then the request finished as ``request.finish()`` finishes it, without
        its two layers of calls (the request's ``write`` and ``finish``, the
        connection's ``finish``), and its --access-log line written."""
        self.write(chunk)
        self._request._finish_time = time.time()
        if self.settings.access_log:
            log_access(self._request, status)
        self._request_finished = True
        self._finish_request()

    def _finish_request(self) -> None:
        # cyclone's _finish_request, with its keep-alive rule read from the canonical
        # header names (no per-call normalisation): an HTTP/1.1 request keeps the
        # connection unless it says "Connection: close"; an HTTP/1.0 one only with
        # "Connection: Keep-Alive", and then only with a Content-Length or as a GET or
        # HEAD (tests/test_hardening.py checks each case on both paths)
        request = self._request
        asked = dict.get(request.headers, "Connection")
        if self.no_keep_alive:
            close = True
        elif request.version == "HTTP/1.1":
            close = asked == "close"
        else:
            close = asked != "Keep-Alive" or not (
                "Content-Length" in request.headers or request.method in ("HEAD", "GET"))
        if self._finish_callback:
            self._finish_callback.callback(None)
            self._finish_callback = None
        self._request = None
        self._request_finished = False
        if close:
            self.transport.loseConnection()
        if self.streaming or self.transport.disconnecting:
            self._send_out()  # (the last answers: nothing more is read)
            return
        self._waiting = True
        self._arm(self.settings.idle_timeout, "")
        if self.paused:
            self.paused = False
            if self._stopped_reading:
                self._stopped_reading = False
                self.transport.resumeProducing()
            if self._buffer:
                self.dataReceived(b"")  # answer what was pipelined meanwhile

    def start_streaming(self) -> None:
        """A handler now owns the connection for an event stream."""
        self.streaming = True
        # no timer is needed again: not left in the reactor's heap, where each of
        # thousands of streams would make every callLater dearer
        self._stop_timer()
        self._send_out()
        if self._buffer.strip(b"\r\n"):
            self._refuse_behind_stream()

    def upgrade(self, protocol: Any, response: bytes) -> None:
        """Carry ``protocol`` (a WebSocket connection) from now on: ``response`` (the
        101) is written, then the protocol gets whatever the client sends.  This
        connection stays the transport's protocol (its limits are released when it
        closes)."""
        self.streaming = True
        self._stop_timer()  # (as for a stream)
        self.upgraded = protocol
        if self.settings.access_log and self._request is not None:
            log_access(self._request, 101)
        # The upgrading request and its handler are done with: nothing is answered or
        # notified for them again (see ``notifyFinish``; a handler an --app hooks stays
        # on with ``protocol``).  Kept, they held ~2.4 KB per WebSocket connection.
        self._finish_callback = None
        self._request = None
        rest = self.clearLineBuffer()  # what the client sent after its handshake
        self._send_out()
        self.transport.write(response)
        protocol.makeConnection(self.transport)
        if rest:
            protocol.dataReceived(rest)

    def notifyFinish(self) -> defer.Deferred[Any]:
        """cyclone's: a Deferred fired when the request in hand is finished or the
        connection is lost.  Once upgraded, the request was finished by the upgrade:
        what its handler asks after that (cyclone's ``_execute_handler`` asks once
        ``get`` returns) is a Deferred that never fires, so the handler is not kept."""
        if self.upgraded is not None:
            return defer.Deferred()
        return super().notifyFinish()  # type: ignore[no-any-return]

    def write(self, chunk: bytes) -> None:
        """An answer (cyclone's or the lean publish's), sent at once when it can be;
        while more pipelined requests of this read wait behind it, kept until the read
        is handled (``_send_out``); while events wait for their fan-out at the end of
        this reactor turn, kept until they are out (``_send_out_after_fan_out``)."""
        if self._reading and self._buffer:
            self._out.append(chunk)
            return
        if self.factory.registry.fan_out_pending:
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
        registry = self.factory.registry
        if not registry.fan_out_pending:
            self._send_out()
        elif not self._answer_waits:
            self._answer_waits = True
            registry.after_fan_out(self._answers_after_fan_out)

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
        if self._waiting and not self._buffer and self._contentbuffer is None:
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
        self.setRawMode()
        self.closing = True  # ignore whatever else arrives
        self._request = None
        self.transport.loseConnection()


__all__ = ["HTTPConnection", "HTTPRequest"]
