"""``POST /publish``: the 2013 form fields or a JSON body → checked → the broker."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from twisted.internet import defer

from cyclone_sse.auth.publishers import Proof
from cyclone_sse.brokers.base import Published
from cyclone_sse.checks import check_messages, loads
from cyclone_sse.errors import BadRequest
from cyclone_sse.event import as_data, check_text
from cyclone_sse.handlers.base import (
    BaseHandler,
    arguments_of,
    bearer_of,
)
from cyclone_sse.http.response import JSON_HEADERS, error_bytes, ok_head

#: One publish: (channels, data, event name, publisher id).
Message = tuple[list[str], str, "str | None", "str | None"]


def _message(body: Any) -> tuple[Message, str | None]:
    """One JSON publish object, and its ``key`` field."""
    if not isinstance(body, dict):
        raise BadRequest("JSON body must be an object (or a list of them: a batch)",
                         field="body")
    channels = body.get("channels", body.get("channel"))
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise BadRequest("'channel' must be a string or 'channels' a list of strings",
                         field="channel")
    if "data" not in body and "message" not in body:
        raise BadRequest("missing field 'data'", field="data")
    data = as_data(body["data"] if "data" in body else body["message"])
    fields = []
    for name in ("event", "id", "key"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a string", field=name)
        fields.append(check_text(value, name) if value else None)
    return (channels, data, fields[0], fields[1]), fields[2]


class PublishLogic:
    """What ``POST /publish`` does with a request, once: authenticate, parse, check,
    publish.  ``LeanPublish`` (the stock route, whatever the options) and
    ``PublishHandler`` (cyclone's, for an --app's own subclass) run it; they supply
    ``application``, ``request``, ``bearer`` and ``get_argument(s)``.

    Form: ``channel`` (repeatable), ``message``, ``key`` [, ``event``, ``id``].
    JSON: ``{"channel": "a" | "channels": [...], "data": ..., "event": ..., "id": ...,
    "key": ...}``; non-string ``data`` is sent as its JSON text.  A JSON list of such
    objects is a batch (``--max-batch``), published in order.
    """

    application: Any
    request: Any
    bearer: Any
    get_argument: Any
    get_arguments: Any

    def authenticate(self) -> Proof:
        """Check ``Authorization: Bearer`` before the body is parsed (the one ladder of
        ``auth.publishers``): True for the publish key (or when no credential is
        configured: the 2013 default, refused at start on a non-loopback address), the
        claims of a publisher token, None when the key may still come in the body (the
        2013 ``key`` field).  A wrong credential is 401 at once."""
        publishers = self.application.publishers
        if publishers.open:
            return True
        if "key" in parse_qs(self.request.query, keep_blank_values=True):
            raise BadRequest("send the publish key in the body or an Authorization header, "
                             "not in the URL (proxies log URLs)", field="key")
        return publishers.proof(self.bearer(), key_may_follow=True)

    def parse(self) -> tuple[list[Message], str | None]:
        """The messages of either body format, and the body's key (the 2013 ``key``)."""
        content_type = dict.get(self.request.headers, "Content-Type", "")
        if content_type.startswith("application/json"):
            return self._parse_json()
        channels = self.get_arguments("channel")
        message = self.get_argument("message", None)
        if message is None:
            raise BadRequest("missing field 'message'", field="message")
        return ([(channels, message, self.get_argument("event", None) or None,
                  self.get_argument("id", None) or None)], self.get_argument("key", None))

    def _parse_json(self) -> tuple[list[Message], str | None]:
        body = loads(self.request.body)
        if isinstance(body, list):  # a batch: one request, many events
            most = self.application.settings_obj.max_batch
            if not body or len(body) > most:
                raise BadRequest(f"a batch holds 1 to {most} events (--max-batch)",
                                 field="body")
            parsed = [_message(item) for item in body]
            if any(key is not None for _, key in parsed):
                raise BadRequest("a batch takes the key in the Authorization header, not in "
                                 "its events", field="key")
            return [message for message, _ in parsed], None
        message, key = _message(body)
        return [message], key

    def checked(self) -> list[Message]:
        """The request's messages, authenticated and checked (or the error)."""
        proof = self.authenticate()
        messages, key = self.parse()
        if proof is not True:
            self.application.publishers.check_rights(
                proof, key, [c for m in messages for c in m[0]])
        most = self.application.settings_obj.max_publish_channels
        for channels, data, name, publisher_id in messages:
            if not channels:
                raise BadRequest("missing field 'channel'", field="channel")
            if most and len(channels) > most and len(set(channels)) > most:
                raise BadRequest(f"too many channels in one publish: {len(set(channels))} > "
                                 f"{most}", field="channel")
            check_messages(channels, data, name, publisher_id)  # (the checks of every path)
        return messages

    def publish(self, messages: list[Message]) -> defer.Deferred[Any]:
        """Publish checked messages, in order; fires with the answer's JSON value."""
        return self.publish_events(messages).addCallback(_answer_value)

    def publish_events(self, messages: list[Message]) -> defer.Deferred[Any]:
        """Publish checked messages, in order; fires with the ``Published`` of a lone
        event, or the list of them."""
        broker = self.application.broker
        publishes = [broker.publish(channel, data, name, publisher_id)
                     for channels, data, name, publisher_id in messages
                     for channel in dict.fromkeys(channels)]
        if len(publishes) == 1:
            return publishes[0]
        d = defer.gatherResults(publishes, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d


def _answer_value(results: Any) -> dict[str, object]:
    results = results if isinstance(results, list) else [results]
    return {"status": "ok", "events": [r.as_json() for r in results],
            "subscribers": sum(r.subscribers for r in results)}


class PublishHandler(PublishLogic, BaseHandler):
    """``POST /publish`` through cyclone, for an --app that routes its own subclass
    (the stock route is ``LeanPublish``'s; see ``PublishLogic``)."""

    def post(self) -> defer.Deferred[object]:
        d = self.publish(self.checked())
        d.addCallback(self.write_json)
        return d  # type: ignore[return-value]


_ANSWER_HEADERS = JSON_HEADERS


class LeanPublish(PublishLogic):
    """``POST /publish`` answered without building a cyclone ``RequestHandler``: the
    connection hands a complete request here (``http.server.HTTPConnection``, by its
    route table).  The same ``PublishLogic`` runs; the answer is written directly, with the headers
    ``BaseHandler`` would send, and so is a refusal or a failed publish
    (``http.response.error_answer``, as every path answers errors): a request that
    starts here ends here."""

    def __init__(self, application: Any, request: Any) -> None:
        self.application = application
        self.request = request

    def bearer(self) -> str | None:
        return bearer_of(self.request)

    def get_arguments(self, name: str) -> list[str]:
        """Form values as cyclone's ``get_arguments`` gives them."""
        return arguments_of(self.request, name)

    def get_argument(self, name: str, default: str | None) -> str | None:
        if name not in self.request.arguments:  # (most fields of most publishes)
            return default
        values = arguments_of(self.request, name)
        return values[-1] if values else default

    def run(self) -> None:
        """Publish and answer, or answer why not."""
        try:
            messages = self.checked()
        except Exception as exc:
            self._failed(exc)
            return
        broker = self.application.broker
        if not broker.immediate:
            try:
                d = self.publish_events(messages)
            except Exception as exc:  # (a broker that refuses at once: an --app's)
                self._failed(exc)
                return
            d.addCallbacks(self._answer, self._failed)
            return
        try:
            results = [broker.publish_now(channel, data, name, publisher_id)
                       for channels, data, name, publisher_id in messages
                       for channel in dict.fromkeys(channels)]
        except Exception as exc:
            self._failed(exc)
            return
        self._answer(results[0] if len(results) == 1 else results)

    def _answer(self, results: Published | list[Published]) -> None:
        """The answer written out, for one event or several (``Published.answer_of``)."""
        self._send(results.answer() if isinstance(results, Published)
                   else Published.answer_of(results))

    def _send(self, body: bytes) -> None:
        request = self.request
        if request.connection.request is not request:  # (the client left meanwhile)
            return
        request.connection.answer(
            ok_head(self.application, request, _ANSWER_HEADERS, len(body)) + body)

    def _failed(self, failure: Any) -> None:
        if self.request.connection.request is self.request:  # (else the client left)
            self.request.connection.answer(*error_bytes(self.application, self.request,
                                                        failure))
