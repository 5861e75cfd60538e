"""``GET /?channels=…``: parse, pass the gate (policies, token, auth callback), ask the
``authorize`` hook, build the transport's subscriber, and hand it to the subscription
protocol.  Subclass it (with ``--app``) to change who may subscribe (``authorize``) or
how a request's channels are chosen (``get_channels``)."""

from __future__ import annotations

from typing import Any

import cyclone.web
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cyclone_sse.auth.access import Access, Credentials
from cyclone_sse.channels import split_channels
from cyclone_sse.errors import Forbidden
from cyclone_sse.event import dumps, encode_retry
from cyclone_sse.handlers.base import BaseHandler, arguments_of
from cyclone_sse.http.response import error_bytes, log_access, ok_head
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.session import admit, enter, seconds_left
from cyclone_sse.transports import PollSubscriber, StreamSubscriber

log = Logger()

#: What an event stream's answer says besides the usual headers (nginx: do not buffer
#: it, whatever proxy_buffering says).
STREAM_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"),
                  ("Cache-Control", "no-store"), ("Connection", "close"),
                  ("X-Accel-Buffering", "no")]
#: A long-poll answer's own headers: event-stream text, or JSON; never cached.
POLL_SSE_HEADERS = (("Cache-Control", "no-store"),
                    ("Content-Type", "text/event-stream; charset=utf-8"))
POLL_JSON_HEADERS = (("Cache-Control", "no-store"),
                     ("Content-Type", "application/json; charset=utf-8"))


class SubscribeHandler(BaseHandler):
    """``GET /?channels=a&channels=b``: an SSE stream, or a long-poll answer."""

    subscriber: ISubscriber | None = None
    _expiry: Any = None  # the timer that ends a stream when its token expires

    # hooks ---------------------------------------------------------------------------

    def get_channels(self) -> list[str]:
        """The channels (and ``*`` patterns) this request subscribes to."""
        return split_channels(self.get_arguments("channels"),
                              self.application.settings_obj.max_channels)

    def authorize(self, channels: list[str]) -> object:
        """Raise ``Forbidden`` (or return a Deferred failing with it) to refuse.

        Called with the concrete channels the request names (after the policies, token
        and callback allowed them), and — synchronously, through ``can_read`` — with
        ``[channel]`` for every channel a pattern of the request reaches, live and in
        replay.  So a hook written for names also guards patterns.  The default lets
        everybody subscribe to everything the gate allows."""
        return None

    def can_read(self, channel: str) -> bool:
        """May a pattern of this request deliver ``channel``?  ``authorize([channel])``
        must not refuse synchronously; a Deferred it returns must already have fired
        with success (the fan-out cannot wait), else the channel is refused."""
        try:
            result = self.authorize([channel])
        except Forbidden:
            return False
        if isinstance(result, defer.Deferred):
            outcome: list[object] = []
            result.addBoth(outcome.append)
            return bool(outcome) and not isinstance(outcome[0], Failure)
        return True

    def has_channels_hook(self) -> bool:
        """Does a subclass (``--app``) choose the channels through ``get_channels``?"""
        return type(self).get_channels is not SubscribeHandler.get_channels

    def channels_named(self, names: list[str]) -> list[str]:
        """``get_channels`` for a subscription that names its channels itself (a
        WebSocket ``subscribe`` message): the hook reads ``names`` as this request's
        ``channels`` arguments, so it applies on every transport."""
        arguments = self.request.arguments
        saved = arguments.get("channels")
        arguments["channels"] = [name.encode("utf-8") for name in names]
        try:
            return self.get_channels()
        finally:
            if saved is None:
                del arguments["channels"]
            else:
                arguments["channels"] = saved

    def has_authorize_hook(self) -> bool:
        """Does a subclass (``--app``) decide through ``authorize``?"""
        return type(self).authorize is not SubscribeHandler.authorize

    def credentials(self) -> Credentials:
        """A token from ``?token=``, ``Authorization: Bearer`` or the ``--auth-cookie``
        cookie, and what the auth callback is forwarded."""
        cookies = self.request.headers.get("Cookie")
        cookie_name = self.application.settings_obj.auth_cookie
        # (cyclone parses every cookie on first use: only when there is one to find)
        cookie = self.get_cookie(cookie_name) if cookies and cookie_name and \
            cookie_name in cookies else None
        token = self.get_argument("token", None) or self.bearer() or cookie or None
        return Credentials(token, cookies, self.request.headers.get("Authorization"),
                           self.request.remote_ip)

    def get_last_event_id(self) -> str | None:
        """The header EventSource sends on reconnect, or ``?lastEventId=`` for
        clients that cannot set headers."""
        value = self.request.headers.get("Last-Event-Id") or \
            self.get_argument("lastEventId", None)
        return value.strip() if value else None

    def wants_poll(self) -> bool:
        """A long-poll: ``?transport=poll``, or an XHR (jQuery marks same-origin ones
        with ``X-Requested-With``; across origins it drops that header, but its ``_=``
        cache-buster stays, and EventSource always asks for ``text/event-stream``)."""
        headers = self.request.headers
        return (self.get_argument("transport", "") == "poll"
                or headers.get("X-Requested-With") == "XMLHttpRequest"
                or ("_" in self.request.arguments
                    and "text/event-stream" not in headers.get("Accept", "")))

    def poll_as_sse(self) -> bool:
        """Answer a poll as event-stream text (what XHR polyfills such as the 2013
        ``jquery.eventsource.js`` parse) rather than JSON: unless the client asked for
        JSON with ``?transport=poll`` or ``Accept: application/json``."""
        accept = self.request.headers.get("Accept", "")
        if "text/event-stream" in accept:
            return True
        return self.get_argument("transport", "") != "poll" and "application/json" not in accept

    def channel_events(self) -> bool:
        """``?channelEvents=1``: each event's type names its channel (see
        ``Event.tagged_frame``)."""
        return self.get_argument("channelEvents", "") in ("1", "true", "yes")

    # flow ----------------------------------------------------------------------------

    def wants_websocket(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"

    @cyclone.web.asynchronous
    def get(self) -> defer.Deferred[object] | None:
        if self.wants_websocket():
            self._upgrade()
            return None
        channels = self.get_channels()
        d: defer.Deferred[Any] = defer.maybeDeferred(
            admit, self.application, self.credentials(), channels, self.get_last_event_id(),
            self)
        d.addCallback(lambda access: self.subscribe(channels, access))
        return d

    def subscribe(self, channels: list[str], access: Access | None = None) -> \
            defer.Deferred[None]:
        app = self.application
        last_id = self.get_last_event_id()
        if self.wants_poll():
            sub: ISubscriber = self._new_poll(access, last_id, self._answer_poll)
            self.set_header("Cache-Control", "no-store")
            expire = None
        else:
            stream = sub = self._open_stream()
            expire = stream.expire
        self.subscriber = sub
        self._expiry, opened = enter(app, sub, channels, last_id, access, expire)
        return opened

    def _new_poll(self, access: Access | None, last_id: str | None,
                  respond: Any) -> PollSubscriber:
        """A long-poll answered through ``respond`` after ``--poll-timeout`` at the
        latest, or when its token expires if that comes first."""
        app = self.application
        settings = app.settings_obj
        left = seconds_left(app, access)
        timeout = settings.poll_timeout if left is None else min(settings.poll_timeout, left)
        return PollSubscriber(app.clock, respond, timeout, settings.retry, last_id)

    def _upgrade(self) -> None:
        """Answer the WebSocket handshake and hand the connection to the WebSocket
        protocol (subscriptions then come as messages: transports/websocket.py)."""
        from cyclone_sse.transports.websocket import SubscriberProtocol
        request = self.request
        hub = self.application.websockets
        response, extensions = hub.handshake(request)  # or the error to answer
        self.hand_over()
        connection = request.connection
        protocol = SubscriberProtocol(
            hub, extensions, connection.address, self.get_argument("token", None),
            request.headers.get("Cookie"),
            # its subscriptions pass this handler's hooks too (--app)
            self if self.has_authorize_hook() or self.has_channels_hook() else None)
        connection.upgrade(protocol, response)

    def _open_stream(self) -> StreamSubscriber:
        for name, value in STREAM_HEADERS:
            self.set_header(name, value)
        return self._stream(self.take_over())

    def _stream(self, head: bytes) -> StreamSubscriber:
        """The connection becomes this stream; ``head`` (the response head) goes out
        with ``retry:`` and the replay, once the subscription is live upstream."""
        app = self.application
        connection = self.request.connection
        transport = connection.transport
        connection.start_streaming()
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        return StreamSubscriber(transport, app.registry.counters,
                                app.settings_obj.max_pending,
                                head + encode_retry(app.settings_obj.retry),
                                self.channel_events())

    def _answer_poll(self, poll: PollSubscriber) -> None:
        self._leave()
        if self._finished:
            return
        if self.poll_as_sse():
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.finish(poll.answer_sse(self.channel_events()))
        else:
            self.write_json(poll.answer())

    def _leave(self) -> None:
        sub, self.subscriber = self.subscriber, None
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        if sub is not None:
            self.application.subscriptions.close(sub)

    def on_connection_close(self, *args: Any) -> None:
        self._leave()


class LeanSubscribe(SubscribeHandler):
    """``GET /`` on the stock route, answered without cyclone's handler machinery: the
    connection hands every complete request here (``http.server.HTTPConnection``, by
    its route table), whatever the options.  It is a ``SubscribeHandler`` whose
    cyclone state is never built: the same hooks read the request (channels, last id,
    credentials), the one admission decides (``session.admit``, auth callback
    included), the same ``StreamSubscriber`` or ``PollSubscriber`` carries it, an
    upgrade is the handler's ``_upgrade``, and a refusal gets the one error answer.  An --app's own
    ``SubscribeHandler`` subclass is served by cyclone instead."""

    def __init__(self, application: Any, request: Any) -> None:
        # (RequestHandler.__init__ is skipped on purpose: its UI modules, headers and
        # transforms are what this path saves; only what the hooks read is set)
        self.application = application
        self.request = request

    def get_arguments(self, name: str, strip: bool = True) -> list[str]:
        if not strip:
            return super().get_arguments(name, strip=False)  # type: ignore[no-any-return]
        return arguments_of(self.request, name)  # (cyclone's, without a regex per value)

    def get_cookie(self, name: str, default: str | None = None) -> str | None:
        cookies = self.request.cookies
        return cookies[name].value if name in cookies else default

    def run(self) -> None:
        """Open the stream or the poll (once ``admit`` decided, asking the auth
        callback if it must), upgrade to a WebSocket, or answer why not."""
        try:
            if self.wants_websocket():
                self._upgrade()
                return
            channels = self.get_channels()
            last_id = self.get_last_event_id()
            decided = admit(self.application, self.credentials(), channels, last_id)
        except Exception as exc:
            self._refuse(exc)
            return
        if isinstance(decided, Access):
            self._open(decided, channels, last_id)
        else:  # (the auth callback is asked: the connection reads nothing meanwhile)
            decided.addCallbacks(self._open, self._refuse, (channels, last_id))

    def _gone(self) -> bool:
        """The client left while its subscription was being decided."""
        return bool(self.request.connection.request is not self.request)

    def _open(self, access: Access, channels: list[str], last_id: str | None) -> None:
        if self._gone():
            return
        if self.wants_poll():
            sub: ISubscriber = self._new_poll(access, last_id, self._answer_lean_poll)
            expire = None
        else:
            stream = sub = self._open_lean_stream()
            expire = stream.expire
        self.subscriber = sub
        self.request.connection.lean_stream = self  # its close ends the subscription
        self._expiry, _ = enter(self.application, sub, channels, last_id, access, expire)

    def _refuse(self, failure: Any) -> None:
        """Answer a refusal (or an error) as every path answers it."""
        if self._gone():
            return
        self.request.connection.answer(*error_bytes(self.application, self.request, failure))

    def _answer_lean_poll(self, poll: PollSubscriber) -> None:
        """A poll's answer (events, a timeout, its token's end), written out: as
        event-stream text or as JSON (``poll_as_sse``), never cached."""
        self._leave()
        connection = self.request.connection
        connection.lean_stream = None
        if self._gone():
            return
        if self.poll_as_sse():
            body, kind = poll.answer_sse(self.channel_events()), POLL_SSE_HEADERS
        else:
            body, kind = dumps(poll.answer()), POLL_JSON_HEADERS
        connection.answer(ok_head(self.application, self.request, kind, len(body)) + body)

    def on_connection_close(self, *args: Any) -> None:
        """The stream (or a waiting poll) ended with its connection: its --access-log
        line, as cyclone writes one when a stream's handler finishes."""
        self._leave()
        if self.application.settings_obj.access_log:
            log_access(self.request, 200)

    def _open_lean_stream(self) -> StreamSubscriber:
        return self._stream(ok_head(self.application, self.request, STREAM_HEADERS))
