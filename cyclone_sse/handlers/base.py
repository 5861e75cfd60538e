"""What every HTTP handler shares: JSON errors mapped from ``errors`` at one edge, CORS,
no per-request logging on success, and the ``Application`` protocol handlers type
against (so they never import ``cyclone_sse.app``)."""

from __future__ import annotations

import re
from typing import Any, Protocol

import cyclone.web
from twisted.logger import Logger
from twisted.python.failure import Failure

from cyclone_sse.auth.access import Gate
from cyclone_sse.auth.publishers import Publishers, key_matches
from cyclone_sse.event import dumps
from cyclone_sse.http.response import (
    default_headers,
    error_answer,
    request_summary,
)
from cyclone_sse.interfaces import IBroker, IHistory
from cyclone_sse.limits import ConnectionLimits, TokenBucket
from cyclone_sse.options import Settings
from cyclone_sse.presence import Presence
from cyclone_sse.registry import ChannelRegistry
from cyclone_sse.static import StaticFile
from cyclone_sse.subscription import Subscriptions

log = Logger()

#: What cyclone replaces with a space in form arguments (RequestHandler.get_arguments).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")


def arguments_of(request: Any, name: str) -> list[str]:
    """The request's ``name`` arguments as cyclone's ``get_arguments`` gives them
    (decoded, control characters made spaces, stripped), for the lean paths."""
    values = []
    for value in request.arguments.get(name, ()):
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not value.isprintable():  # (no control character in a printable text)
            value = _CONTROL_CHARS.sub(" ", value)
        values.append(value.strip())
    return values


def bearer_of(request: Any) -> str | None:
    """The request's ``Authorization: Bearer`` value, if any."""
    auth = dict.get(request.headers, "Authorization", "")
    return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None


class Application(Protocol):
    """What handlers need of their application; ``cyclone_sse.app.App`` provides it."""

    settings_obj: Settings
    clock: Any
    registry: ChannelRegistry
    history: IHistory
    broker: IBroker
    subscriptions: Subscriptions
    static_files: dict[str, StaticFile]
    gate: Gate
    publishers: Publishers  # who may publish on /publish
    pushpin_publishers: Publishers  # ... and on Pushpin's /publish/
    internal: bool
    grip_held: int  # clients held for a --grip-proxy backend
    pattern_replays: TokenBucket | None
    websockets: Any  # the WebSocket side (transports/websocket.py: WebSockets)
    sockjs_sessions: Any  # SockJS sessions over HTTP (transports/sockjs.py: Sessions)
    connection_limits: ConnectionLimits  # (SockJS sessions are bounded like connections)
    presence: Presence

    def allowed_origin(self, origin: str | None) -> str | None: ...

    def stats(self, with_channels: bool = True) -> dict[str, object]: ...

    def not_ready(self) -> list[str]: ...

    def admit_replay(self, channels: list[str], last_id: str | None) -> None: ...


class BaseHandler(cyclone.web.RequestHandler):
    """JSON errors, CORS, and no per-request logging on success."""

    application: Application

    def set_default_headers(self) -> None:
        for name, value in default_headers(self.application, self.request):
            self.set_header(name, value)

    def compute_etag(self) -> None:
        """No ETags on dynamic answers: a revalidating client or proxy must never be
        told ``304`` for a poll or a stream (static files set their own)."""
        return None

    def options(self, *args: Any) -> None:
        """CORS preflight: EventSource never needs one, fetch/XHR clients may."""
        self.set_status(204)
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers",
                        "Last-Event-Id, X-Requested-With, Content-Type, Authorization, "
                        "Cache-Control")
        self.set_header("Access-Control-Max-Age", "86400")
        self.finish()

    def write_json(self, value: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(value))

    def _handle_request_exception(self, e: object) -> None:
        # cyclone hook: our errors (and cyclone's HTTPError) answered as every path
        # answers them (http/response.py: JSON, one log line), not as a traceback and
        # an HTML page
        error = e.value if isinstance(e, Failure) else e
        if self._finished:
            return
        if self._headers_written:
            # A stream already started: nothing sensible can be sent; just close it.
            log.failure("error on an open stream", Failure(error))
            self.request.connection.transport.loseConnection()
            return
        answer = error_answer(error, self._request_summary())
        self.clear()
        self.set_default_headers()
        for name, value in answer.headers:
            self.set_header(name, value)
        self.write_json(answer.body, answer.status)

    def take_over(self) -> bytes:
        """The connection is this handler's own from now on (a stream, a held GRIP
        response, an upgrade): the response head cyclone would write, with the headers
        set so far, for the caller to write; cyclone writes nothing more for this
        request (cyclone's private ``_headers_written``, set here and in ``hand_over``
        only; tests/test_quality.py checks cyclone still reads it)."""
        head: bytes = self._generate_headers()
        self._headers_written = True
        return head

    def hand_over(self) -> None:
        """The connection now carries another protocol (a WebSocket): cyclone writes
        nothing for this request and treats it as finished (its private
        ``_headers_written`` and ``_finished``, set here only)."""
        self._headers_written = True
        self._finished = True

    def _request_summary(self) -> str:
        # (cyclone's own has the whole URI: tokens and keys in it are masked here)
        return request_summary(self.request)

    def key_matches(self, given: str | None = None) -> bool:
        """``given`` (or the ``Authorization: Bearer`` value) is the publish key,
        compared in constant time; False when no key is configured."""
        return key_matches(self.application.settings_obj.http_secret, given or self.bearer())

    def channels_visible(self) -> bool:
        """Channel names in statistics: on the internal listener, with the publish key,
        or when nothing here is private."""
        app = self.application
        return app.internal or self.key_matches() or (
            not app.settings_obj.http_secret and not app.gate.restricted)

    def bearer(self) -> str | None:
        """The ``Authorization: Bearer`` value, if any."""
        return bearer_of(self.request)



class NotFoundHandler(BaseHandler):
    """Any other URL: a 404 that says where things are."""

    def prepare(self) -> None:
        raise cyclone.web.HTTPError(404, "no such URL: subscribe at /?channels=NAME, "
                                         "publish at POST /publish, stats at /stats")
