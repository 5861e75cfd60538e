"""``GET /?channels=…``: parse, authorize, build the transport's subscriber, and hand it
to the subscription protocol.  Subclass it (with ``--app``) to change who may subscribe
(``authorize``) or how a request's channels are chosen (``get_channels``)."""

from __future__ import annotations

from typing import Any

import cyclone.web
from twisted.internet import defer

from cyclone_sse.channels import split_channels
from cyclone_sse.event import encode_retry
from cyclone_sse.handlers.base import BaseHandler
from cyclone_sse.interfaces import ISubscriber
from cyclone_sse.transports import PollSubscriber, StreamSubscriber


class SubscribeHandler(BaseHandler):
    """``GET /?channels=a&channels=b``: an SSE stream, or a long-poll answer."""

    subscriber: ISubscriber | None = None

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
            settings = app.settings_obj
            sub: ISubscriber = PollSubscriber(app.clock, self._answer_poll,
                                              settings.poll_timeout, settings.retry, last_id)
        else:
            sub = self._open_stream()
        self.subscriber = sub
        return app.subscriptions.open(sub, channels, last_id)

    def _open_stream(self) -> StreamSubscriber:
        app = self.application
        connection = self.request.connection
        transport = connection.transport
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Connection", "close")
        # nginx: do not buffer this response, whatever proxy_buffering says.
        self.set_header("X-Accel-Buffering", "no")
        # The head goes out with the replay, once the subscription is live upstream.
        head = self._generate_headers() + encode_retry(app.settings_obj.retry)
        self._headers_written = True
        connection.streaming = True
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        return StreamSubscriber(transport, app.registry.counters,
                                app.settings_obj.max_pending, head)

    def _answer_poll(self, body: dict[str, object]) -> None:
        self._leave()
        if not self._finished:
            self.write_json(body)

    def _leave(self) -> None:
        sub, self.subscriber = self.subscriber, None
        if sub is not None:
            self.application.subscriptions.close(sub)

    def on_connection_close(self, *args: Any) -> None:
        self._leave()
