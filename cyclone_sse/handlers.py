"""HTTP handlers: thin adapters from HTTP to the registry, history and broker.

Subclass them (with ``--app``) to change who may subscribe (``authorize``), how the
channels of a request are chosen (``get_channels``) or what a publish does.
"""

from __future__ import annotations

import hmac
import json
from http.client import responses
from typing import TYPE_CHECKING, Any

import cyclone.web
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cyclone_sse import __version__
from cyclone_sse.channels import check_channel, split_channels
from cyclone_sse.errors import BadRequest, CycloneSSEError, InvalidEvent, Unauthorized
from cyclone_sse.event import Event, check_field, dumps, encode_retry
from cyclone_sse.history import GAP_UNAVAILABLE, Replay
from cyclone_sse.subscribers import GAP_EVENT, PollSubscriber, StreamSubscriber

if TYPE_CHECKING:
    from cyclone_sse.app import App

log = Logger()

#: Longest ``id`` a publisher may attach (it is kept for de-duplication).
MAX_PUBLISHER_ID = 200


class BaseHandler(cyclone.web.RequestHandler):
    """JSON errors, CORS, and no per-request logging on success."""

    application: App

    def set_default_headers(self) -> None:
        self.set_header("Server", f"cyclone-sse/{__version__}")
        self.set_header("Cache-Control", "no-cache")
        origin = self.application.allowed_origin(self.request.headers.get("Origin"))
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            if origin != "*":
                self.set_header("Access-Control-Allow-Credentials", "true")
                self.set_header("Vary", "Origin")

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
        # cyclone hook: map our errors (and cyclone's HTTPError) to a JSON answer
        # with one log line, instead of a traceback and an HTML page.
        error = e.value if isinstance(e, Failure) else e
        if self._finished:
            return
        if self._headers_written:
            # A stream already started: nothing sensible can be sent; just close it.
            log.failure("error on an open stream", Failure(error))
            self.request.connection.transport.loseConnection()
            return
        if isinstance(error, CycloneSSEError):
            status, message = error.status, str(error)
            body: dict[str, object] = {"error": message, "status": status}
            if isinstance(error, BadRequest) and error.field:
                body["field"] = error.field
        elif isinstance(error, cyclone.web.HTTPError):
            status = error.status_code
            message = error.log_message or self._reason_for(status)
            body = {"error": message, "status": status}
        else:
            log.failure("unexpected error in {summary}", Failure(error),
                        summary=self._request_summary())
            status, body = 500, {"error": "internal server error", "status": 500}
            message = body["error"]  # type: ignore[assignment]
        if status != 500:
            log.info("{summary}: {status} {message}", summary=self._request_summary(),
                     status=status, message=message)
        self.clear()
        self.set_default_headers()
        self.write_json(body, status)

    @staticmethod
    def _reason_for(status: int) -> str:
        return responses.get(status, "error").lower()


class SubscribeHandler(BaseHandler):
    """``GET /?channels=a&channels=b``: an SSE stream, or a long-poll answer."""

    subscriber: StreamSubscriber | PollSubscriber | None = None
    _replay: Replay | None = None   # what the history answered (long-poll reads it)
    _last_id: str | None = None     # the id the long-poll client sent

    # hooks ---------------------------------------------------------------------------

    def get_channels(self) -> list[str]:
        """The channels (and ``*`` patterns) this request subscribes to."""
        return split_channels(self.get_arguments("channels"),
                              self.application.settings_obj.max_channels)

    def authorize(self, channels: list[str]) -> object:
        """Raise ``Forbidden`` (or return a Deferred failing with it) to refuse.

        The default lets everybody subscribe to everything."""
        return None

    def get_last_event_id(self) -> str | None:
        """The header EventSource sends on reconnect, or ``?lastEventId=`` for
        clients that cannot set headers."""
        value = self.request.headers.get("Last-Event-Id") or \
            self.get_argument("lastEventId", None)
        return value.strip() if value else None

    def wants_poll(self) -> bool:
        return (self.get_argument("transport", "") == "poll"
                or self.request.headers.get("X-Requested-With") == "XMLHttpRequest")

    # flow ----------------------------------------------------------------------------

    @cyclone.web.asynchronous
    def get(self) -> defer.Deferred[object]:
        channels = self.get_channels()
        d = defer.maybeDeferred(self.authorize, channels)
        d.addCallback(lambda _: self.subscribe(channels))
        return d

    def subscribe(self, channels: list[str]) -> defer.Deferred[None]:
        app = self.application
        last_id = self.get_last_event_id()
        if self.wants_poll():
            sub: StreamSubscriber | PollSubscriber = PollSubscriber(
                app.clock, self._answer_poll, app.settings_obj.poll_timeout)
            self._last_id = last_id
        else:
            sub = self._open_stream()
        self.subscriber = sub
        app.registry.attach(sub, channels)
        d: defer.Deferred[Any] = app.broker.when_subscribed(channels)
        d.addCallback(lambda _: app.history.since(channels, last_id,
                                                  app.settings_obj.replay_limit))
        d.addErrback(self._history_failed, last_id)
        d.addCallback(self._replayed, last_id)
        return d

    def _history_failed(self, failure: Failure, last_id: str | None) -> Replay:
        """The history store is unreachable: go live, and say replay was impossible."""
        log.warn("replay unavailable: {error}", error=failure.getErrorMessage())
        return Replay(gap=GAP_UNAVAILABLE if last_id else None)

    def _open_stream(self) -> StreamSubscriber:
        app = self.application
        connection = self.request.connection
        transport = connection.transport
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Connection", "close")
        # nginx: do not buffer this response, whatever proxy_buffering says.
        self.set_header("X-Accel-Buffering", "no")
        # Headers go out with the replay, once the subscription is live upstream (at
        # once with the HTTP broker): a client that sees the stream open misses nothing
        # published afterwards.
        self._stream_head = self._generate_headers() + encode_retry(app.settings_obj.retry)
        self._headers_written = True
        connection.streaming = True
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        return StreamSubscriber(transport, app.registry.counters, app.settings_obj.max_pending)

    def _replayed(self, replay: Replay, last_id: str | None) -> None:
        sub = self.subscriber
        if sub is None:  # the client left while the history answered
            return
        counters = self.application.registry.counters
        if last_id:
            counters.replays += 1
            counters.replayed_events += len(replay.events)
            if replay.gap:
                counters.replay_gaps += 1
        self._replay = replay
        if isinstance(sub, StreamSubscriber):
            sub.start_live(replay, last_id, self._stream_head)
        else:
            sub.start_live(replay)

    def _answer_poll(self, events: list[Event]) -> None:
        self._leave()
        if self._finished:
            return
        replay = self._replay
        last_id: str | None
        if events:
            last_id = events[-1].id
        elif self._last_id and replay is not None and not replay.gap:
            last_id = self._last_id
        else:
            last_id = replay.head_id if replay is not None else self._last_id
        gap = replay.gap if replay is not None else None
        self.write_json({"events": [e.as_json() for e in events], "lastEventId": last_id,
                         "gap": gap, "retry": self.application.settings_obj.retry})

    def _leave(self) -> None:
        sub, self.subscriber = self.subscriber, None
        if sub is not None:
            self.application.registry.detach(sub)
            if isinstance(sub, PollSubscriber):
                sub.cancel()

    def on_connection_close(self, *args: Any) -> None:
        self._leave()


class PublishHandler(BaseHandler):
    """``POST /publish``: the original form fields, or a JSON body.

    Form: ``channel`` (repeatable), ``message``, ``key`` [, ``event``, ``id``].
    JSON: ``{"channel": "a" | "channels": [...], "data": ..., "event": ..., "id": ...,
    "key": ...}``; non-string ``data`` is sent as its JSON text.
    """

    def check_key(self, given: str | None) -> None:
        secret = self.application.settings_obj.http_secret
        if not secret:
            return
        auth = self.request.headers.get("Authorization", "")
        if not given and auth.startswith("Bearer "):
            given = auth[len("Bearer "):].strip()
        if not given or not hmac.compare_digest(given.encode(), secret.encode()):
            raise Unauthorized("missing or wrong publish key")

    def parse(self) -> tuple[list[str], str, str | None, str | None, str | None]:
        """(channels, data, event name, publisher id, key) from either body format."""
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            return self._parse_json()
        channels = self.get_arguments("channel")
        message = self.get_argument("message", None)
        if message is None:
            raise BadRequest("missing field 'message'", field="message")
        return (channels, message, self.get_argument("event", None) or None,
                self.get_argument("id", None) or None, self.get_argument("key", None))

    def _parse_json(self) -> tuple[list[str], str, str | None, str | None, str | None]:
        try:
            body = json.loads(self.request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"body is not valid UTF-8 JSON: {exc}", field="body") from None
        if not isinstance(body, dict):
            raise BadRequest("JSON body must be an object", field="body")
        channels = body.get("channels", body.get("channel"))
        if isinstance(channels, str):
            channels = [channels]
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise BadRequest("'channel' must be a string or 'channels' a list of strings",
                             field="channel")
        if "data" not in body and "message" not in body:
            raise BadRequest("missing field 'data'", field="data")
        data = body["data"] if "data" in body else body["message"]
        if not isinstance(data, str):
            data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        _check_utf8(data, "data")
        fields = []
        for name in ("event", "id", "key"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"'{name}' must be a string", field=name)
            fields.append(_check_utf8(value, name) if value else None)
        return channels, data, fields[0], fields[1], fields[2]

    def post(self) -> defer.Deferred[object]:
        channels, data, name, publisher_id, key = self.parse()
        self.check_key(key)
        if not channels:
            raise BadRequest("missing field 'channel'", field="channel")
        for channel in channels:
            check_channel(channel)
        if name is not None:
            check_field("event", name)
            if name == GAP_EVENT:
                raise InvalidEvent(f"event name {GAP_EVENT!r} is reserved", field="event")
        if publisher_id is not None:
            check_field("id", publisher_id)
            if len(publisher_id) > MAX_PUBLISHER_ID:
                raise InvalidEvent(f"'id' longer than {MAX_PUBLISHER_ID} characters", field="id")
        broker = self.application.broker
        unique = dict.fromkeys(channels)
        d = defer.gatherResults(
            [broker.publish(channel, data, name, publisher_id) for channel in unique],
            consumeErrors=True)
        d.addCallback(self._published)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d  # type: ignore[return-value]

    def _published(self, results: list[Any]) -> None:
        self.write_json({"status": "ok", "events": [r.as_json() for r in results],
                         "subscribers": sum(r.subscribers for r in results)})


def _check_utf8(value: str, field: str) -> str:
    """JSON may smuggle lone surrogates (``"\\ud800"``), which no UTF-8 stream can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"'{field}' is not valid Unicode (lone surrogate)", field=field) from None
    return value


class StatsHandler(BaseHandler):
    """``GET /stats``: counters and per-channel subscriber counts as JSON."""

    def get(self) -> None:
        self.write_json(self.application.stats())


class ChannelStatsHandler(BaseHandler):
    """``GET /stats/channels``: the 2013 format, a list of ``[channel, subscribers]``."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps([list(pair) for pair in self.application.registry.subscriber_counts()]))


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the same numbers for Prometheus."""

    def get(self) -> None:
        from cyclone_sse.export import prometheus
        self.set_header("Content-Type", prometheus.CONTENT_TYPE)
        self.finish(prometheus.render(self.application))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise cyclone.web.HTTPError(404, "no such URL: subscribe at /?channels=NAME, "
                                         "publish at POST /publish, stats at /stats")
