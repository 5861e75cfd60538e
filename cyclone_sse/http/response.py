"""One way to answer: the head every response carries (``ok_head``, for the lean
paths; ``default_headers`` for cyclone's handlers), and one error answer
(``error_answer``: the status, JSON body, headers and log line an exception maps to),
whichever path meets the error."""

from __future__ import annotations

import time
from email.utils import formatdate
from http.client import responses
from typing import Any, NamedTuple

import cyclone.web
from twisted.logger import Logger
from twisted.python.failure import Failure

from cyclone_sse import __version__
from cyclone_sse.errors import (
    BadRequest,
    CycloneSSEError,
    Forbidden,
    InvalidToken,
    TooManyRequests,
    Unauthorized,
)
from cyclone_sse.event import dumps
from cyclone_sse.logs import masked

log = Logger()

#: A JSON answer's own header (``BaseHandler.write_json`` sets the same).
JSON_HEADERS = (("Content-Type", "application/json; charset=utf-8"),)


def default_headers(app: Any, request: Any) -> list[tuple[str, str]]:
    """The headers every answer carries: server, caching, sniffing, HSTS, CORS."""
    settings = app.settings_obj
    headers = [("Server", "cyclone-sse" if settings.hide_version else
                f"cyclone-sse/{__version__}"),
               ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")]
    if settings.hsts and request.protocol == "https":
        headers.append(("Strict-Transport-Security", f"max-age={settings.hsts}"))
    origin = app.allowed_origin(request.headers.get("Origin"))
    if origin:
        headers.append(("Access-Control-Allow-Origin", origin))
        if origin != "*":
            headers.append(("Access-Control-Allow-Credentials", "true"))
            headers.append(("Vary", "Origin"))
    return headers


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def ok_head(app: Any, request: Any, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...],
            length: int | None = None, status: int = 200) -> bytes:
    """A response head written without a cyclone handler (the lean paths): the headers
    every answer carries, ``headers`` (which win over them), ``Content-Length`` when
    ``length`` is given, and the date.  All but the last two are joined once per
    kind of request (version, scheme, CORS answer, status) and kept on the
    application."""
    settings = app.settings_obj
    key = (request.version, request.protocol == "https" and settings.hsts,
           app.allowed_origin(dict.get(request.headers, "Origin")), tuple(headers), status)
    cache = app.__dict__.setdefault("_ok_heads", {})
    start = cache.get(key)
    if start is None:
        names = {name for name, _ in headers}
        start = "".join(f"{line}\r\n" for line in (
            f"{request.version} {status} {responses.get(status, 'Error')}",
            *(f"{name}: {value}" for name, value in default_headers(app, request)
              if name not in names),
            *(f"{name}: {value}" for name, value in headers)))
        if len(cache) < 64:  # (bounded: origins come from --cors-origin)
            cache[key] = start
    if length is not None:
        return f"{start}Content-Length: {length}\r\nDate: {http_date()}\r\n\r\n".encode(
            "latin-1")
    return f"{start}Date: {http_date()}\r\n\r\n".encode("latin-1")


class ErrorAnswer(NamedTuple):
    """What an error is answered with."""

    status: int
    body: dict[str, object]  # {"error": reason, "status": status, ...}
    headers: list[tuple[str, str]]  # WWW-Authenticate, Retry-After, the error's own


def error_answer(error: object, summary: str) -> ErrorAnswer:
    """The answer to ``error`` met while handling the request ``summary`` names, logged
    once here: one line for a refusal, the traceback only for an unexpected error."""
    headers: list[tuple[str, str]] = []
    if isinstance(error, CycloneSSEError):
        status, message = error.status, str(error)
        body: dict[str, object] = {"error": message, "status": status}
        if isinstance(error, BadRequest) and error.field:
            body["field"] = error.field
        if isinstance(error, Forbidden) and error.channel:
            body["channel"] = error.channel
        headers.extend(getattr(error, "headers", {}).items())
        if isinstance(error, InvalidToken):  # RFC 6750, section 3
            headers.append(("WWW-Authenticate", f'Bearer error="invalid_token", '
                                                f'error_description="{error.description}"'))
        elif isinstance(error, Unauthorized):
            headers.append(("WWW-Authenticate", 'Bearer realm="cyclone-sse"'))
        if isinstance(error, TooManyRequests) and error.retry_after:
            headers.append(("Retry-After", str(error.retry_after)))
    elif isinstance(error, cyclone.web.HTTPError):
        status = error.status_code
        message = error.log_message or responses.get(status, "error").lower()
        body = {"error": message, "status": status}
    else:
        unexpected = error if isinstance(error, BaseException) else RuntimeError(repr(error))
        log.failure("unexpected error in {summary}", Failure(unexpected), summary=summary)
        return ErrorAnswer(500, {"error": "internal server error", "status": 500}, [])
    log.info("{summary}: {status} {message}", summary=summary, status=status,
             message=message)
    return ErrorAnswer(status, body, headers)


def request_summary(request: Any) -> str:
    """``METHOD URI (address)`` for a log line, with tokens and keys in the URI masked."""
    return f"{request.method} {masked(request.uri)} ({request.remote_ip})"


def log_access(request: Any, status: int) -> None:
    """The ``--access-log`` line of a finished request (whichever path answered it)."""
    log.info("{status} {summary} {ms:.2f}ms", status=status,
             summary=request_summary(request), ms=1000.0 * request.request_time())


def error_bytes(app: Any, request: Any, failure: BaseException | Failure) -> tuple[bytes, int]:
    """A lean path's whole answer to ``failure`` (an exception, or a Failure holding
    one), with its status: the head every answer carries, then the JSON body."""
    error = failure.value if isinstance(failure, Failure) else failure
    answer = error_answer(error, request_summary(request))
    body = dumps(answer.body)
    return ok_head(app, request, (*JSON_HEADERS, *answer.headers), len(body),
                   answer.status) + body, answer.status
