"""cyclone's HTTP connection with the limits a public push server needs.

cyclone 1.3 buffers any request body, however large, drops malformed requests
without a word, and keeps parsing input on a connection that is streaming.  This
subclass answers each of those with a clear status and a one-line log, and
otherwise leaves cyclone's parsing as it is.
"""

from __future__ import annotations

import json
from http.client import responses

from cyclone import httpserver, httputil
from cyclone.httpserver import HTTPRequest
from twisted.logger import Logger

log = Logger()

#: Header lines a request may have.
MAX_HEADER_LINES = 100


class HTTPConnection(httpserver.HTTPConnection):
    """cyclone's connection, with limits on request lines, headers and bodies."""

    MAX_LENGTH = 16384  # bytes in one request or header line (LineReceiver)

    streaming = False   # set by a handler that now owns the connection for a stream

    def connectionMade(self) -> None:
        super().connectionMade()
        self.max_body = self.factory.settings_obj.max_body
        self._header_lines = 0

    def dataReceived(self, data: bytes) -> None:
        # A streaming response owns the connection until it closes; anything the
        # client sends meanwhile (it should send nothing) is not a new request.
        if not self.streaming:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if line:
            self._header_lines += 1
            if self._header_lines > MAX_HEADER_LINES:
                self.reject(431, "too many header lines")
                return
        else:
            self._header_lines = 0
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reject(431, f"request line or header longer than {self.MAX_LENGTH} bytes")

    def _on_headers(self, data: bytes) -> None:
        eol = data.find(b"\r\n")
        start_line = data[:eol] if eol >= 0 else data
        parts = start_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self.reject(400, "malformed HTTP request line")
            return
        try:
            text = data[eol:].decode("utf-8") if eol >= 0 else ""
            headers = httputil.HTTPHeaders.parse(text)
        except (UnicodeDecodeError, ValueError):
            self.reject(400, "malformed HTTP headers (not UTF-8 or not 'Name: value')")
            return
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            self.reject(411, "chunked request bodies are not accepted: send Content-Length")
            return
        length = headers.get("Content-Length", "0").strip() or "0"
        if not length.isdigit():
            self.reject(400, "Content-Length must be a non-negative whole number")
            return
        if int(length) > self.max_body:
            self.reject(413, f"request body larger than {self.max_body} bytes")
            return
        super()._on_headers(data)

    def _on_request_body(self, data: bytes) -> None:
        # cyclone decodes urlencoded form bodies as UTF-8 before any handler runs.
        assert self._request is not None
        content_type = self._request.headers.get("Content-Type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.reject(400, "form body is not valid UTF-8")
                return
        super()._on_request_body(data)

    def reject(self, status: int, message: str) -> None:
        """Answer a request we cannot parse or accept, then close the connection."""
        peer = self.transport.getPeer()
        log.warn("rejected request from {peer}: {status} {message}",
                 peer=getattr(peer, "host", peer), status=status, message=message)
        body = json.dumps({"error": message, "status": status}).encode()
        head = (f"HTTP/1.1 {status} {responses.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.setRawMode()
        self.streaming = True  # ignore whatever else arrives
        self._request = None
        self.transport.loseConnection()


__all__ = ["HTTPConnection", "HTTPRequest"]
