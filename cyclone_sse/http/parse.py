"""HTTP/1.1 request heads and form bodies read into values, with every RFC 9112 check
and limit the daemon applies, and no I/O: ``parse_head`` gives a ``Head`` or the
refusal ``(status, reason)``.  The connection (``cyclone_sse.http.server``) feeds it
and answers; ``tests/test_http_parse.py`` holds it against h11 with generated heads."""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from cyclone.escape import parse_qs_bytes
from cyclone.httputil import HTTPHeaders

from cyclone_sse.limits import RESERVED_PATHS

#: Header lines a request may have.
MAX_HEADER_LINES = 100
#: RFC 9110 5.1 and 9.1: a field name and a method are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: What a field value may not hold (RFC 9110 5.5): control characters but HTAB.  A CR,
#: LF or NUL that survived the split into CRLF-ended lines would be read as a line end
#: by some other parser on the way (a request-smuggling ingredient).
_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Methods read without a regex.
_COMMON_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
#: What a request target may not hold: controls, spaces and DEL (RFC 9112 3.2).
_TARGET_CONTROL = re.compile(rb"[\x00-\x20\x7f]")

#: Header names met so far, in cyclone's spelling (HTTPHeaders._normalize_name); at most
#: ``MAX_KNOWN_NAMES`` are kept, so a client sending made-up names cannot grow it.
_canonical_names: dict[str, str] = {}
MAX_KNOWN_NAMES = 512
_CANONICAL = re.compile(r"[A-Z0-9][a-z0-9]*(-[A-Z0-9][a-z0-9]*)*\Z")


class Head(NamedTuple):
    """A request head the daemon accepts."""

    length: int  # of the body (Content-Length; 0 without one)
    method: str
    uri: str
    version: str
    headers: Any  # cyclone's HTTPHeaders: what handlers read


_tuple_new = tuple.__new__


def canonical_name(name: str) -> str:
    """A (valid) header name as cyclone's ``HTTPHeaders`` keys it: ``Http-Header-Case``."""
    canonical = name if _CANONICAL.match(name) else \
        "-".join(word.capitalize() for word in name.split("-"))
    if len(_canonical_names) < MAX_KNOWN_NAMES:
        _canonical_names[name] = canonical
    return canonical


_new_headers = HTTPHeaders.__new__


def new_headers() -> tuple[Any, dict[str, list[str]]]:
    """An empty ``HTTPHeaders`` and its ``_as_list``, made without its constructor's
    ``update()`` pass over nothing (a tenth of a head's parse): the two attributes it
    sets are set here (tests/test_quality.py compares them)."""
    headers = _new_headers(HTTPHeaders)
    values_of: dict[str, list[str]] = {}
    headers._as_list = values_of
    headers._last_key = None
    return headers, values_of


def parse_head(data: bytes, max_body: int,
               only_reserved: str | None = None) -> Head | tuple[int, str]:
    """The head ``data`` (request line and header lines, each ending in CRLF), or
    ``(status, reason)`` to refuse it with.  ``only_reserved``: why this connection is
    over a limit, answered 503 unless it asks for a path in ``RESERVED_PATHS``."""
    eol = data.find(b"\r\n")
    start_line = data[:eol] if eol >= 0 else data
    parts = start_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[1]:
        return 400, "malformed HTTP request line"
    if parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        return 505, "HTTP version not supported: send HTTP/1.1"
    try:
        text = data[eol + 2:].decode("utf-8") if eol >= 0 else ""
    except UnicodeDecodeError:
        return 400, "malformed HTTP headers (not UTF-8 or not 'Name: value')"
    # filled as HTTPHeaders.add would (the joined value in the dict, each value in
    # ``_as_list``, cyclone's private list: tests/test_quality.py checks it), without
    # its per-call name normalisation and its unbounded cache of every name a
    # client ever sent
    headers, values_of = new_headers()
    store = dict.__setitem__
    for line in text.split("\r\n"):  # checked and parsed in one pass
        if not line:
            continue
        if line[0] in " \t":
            return 400, "obsolete line folding in the headers"
        name, colon, value = line.partition(":")
        canonical = _canonical_names.get(name) if colon else None
        if canonical is None:
            if not colon or not _TOKEN.match(name):
                return 400, ("whitespace before a header's colon"
                             if name.rstrip() != name
                             else "malformed header line (expected 'Name: value')")
            canonical = canonical_name(name)
        if not value.isprintable() and _VALUE_CONTROL.search(value):  # (tab, non-ASCII)
            return 400, "a header value holds a control character (a bare CR or LF?)"
        value = value.strip(" \t")
        values = values_of.get(canonical)
        if values is None:
            values_of[canonical] = [value]
            store(headers, canonical, value)
        else:
            values.append(value)
            store(headers, canonical, ",".join(values))
    if parts[2] == b"HTTP/1.1" and len(values_of.get("Host", ())) != 1:
        return 400, "an HTTP/1.1 request needs exactly one Host header"
    lengths = values_of.get("Content-Length")  # (values are stripped)
    if "Transfer-Encoding" in values_of:
        if lengths:
            return 400, "both Transfer-Encoding and Content-Length: ambiguous framing"
        if "chunked" in headers["Transfer-Encoding"].lower():
            return 411, "chunked request bodies are not accepted: send Content-Length"
        return 501, "Transfer-Encoding is not supported: send Content-Length"
    length = 0
    if lengths is not None:
        text = lengths[0]
        # (ASCII digits only: "²" is a digit to str.isdigit, not to int)
        if not (text.isdigit() and text.isascii()) or \
                (len(lengths) > 1 and any(other != text for other in lengths)):
            return 400, "Content-Length must be one non-negative whole number"
        length = int(text)
    if only_reserved and parts[1].split(b"?")[0].decode("latin-1") not in RESERVED_PATHS:
        return 503, only_reserved
    if length > max_body:
        return 413, f"request body larger than {max_body} bytes"
    try:
        method, uri = parts[0].decode("utf-8"), parts[1].decode("utf-8")
    except UnicodeDecodeError:
        return 400, "malformed HTTP request line (not UTF-8)"
    if (method not in _COMMON_METHODS and not _TOKEN.match(method)) or \
            (not uri.isprintable() and _TARGET_CONTROL.search(parts[1])):
        return 400, "malformed HTTP request line"
    # (tuple's own constructor: a NamedTuple's Python-level __new__ cost a tenth here)
    return _tuple_new(Head, (length, method, uri, parts[2].decode("latin-1"), headers))


def parse_form(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, errors="strict")``: blank values dropped, ``+`` and %-escapes
    decoded (strictly UTF-8); a body with neither is only split."""
    if "%" in text or "+" in text:
        return parse_qsl(text, errors="strict")
    pairs = []
    for pair in text.split("&"):
        name, equals, value = pair.partition("=")
        if equals and value:
            pairs.append((name, value))
    return pairs


def parse_query(query: str) -> dict[str, list[str]]:
    """``parse_qs(query, keep_blank_values=True)``, as cyclone's request parses its
    query; a query with neither ``+`` nor %-escapes is only split."""
    if "%" in query or "+" in query:
        return parse_qs_bytes(query, keep_blank_values=True)  # type: ignore[no-any-return]
    arguments: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            values = arguments.get(name)
            if values is None:
                arguments[name] = [value]
            else:
                values.append(value)
    return arguments
