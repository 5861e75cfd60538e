"""``POST /publish``: the 2013 form fields or a JSON body → checked → the broker."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from twisted.internet import defer

from cyclone_sse.auth.tokens import Claims
from cyclone_sse.channels import check_channel
from cyclone_sse.errors import BadRequest, Forbidden, Unauthorized
from cyclone_sse.event import as_data, check_publish, check_text
from cyclone_sse.handlers.base import BaseHandler

#: Deepest nesting of arrays and objects in a JSON body.
MAX_JSON_DEPTH = 32


def _deeper_than(value: object, limit: int) -> bool:
    """Whether arrays/objects in ``value`` nest deeper than ``limit`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return False


class PublishHandler(BaseHandler):
    """``POST /publish``: the original form fields, or a JSON body.

    Form: ``channel`` (repeatable), ``message``, ``key`` [, ``event``, ``id``].
    JSON: ``{"channel": "a" | "channels": [...], "data": ..., "event": ..., "id": ...,
    "key": ...}``; non-string ``data`` is sent as its JSON text.
    """

    def authenticate(self) -> Claims | bool | None:
        """Check ``Authorization: Bearer`` before the body is parsed: True for the
        publish key (or when no credential is configured: the 2013 default, refused at
        start on a non-loopback address), the claims of a publisher token, None when
        the key may still come in the body (the 2013 ``key`` field).  A wrong
        credential is 401 at once."""
        secret = self.application.settings_obj.http_secret
        verifier = self.application.gate.verifier
        if not secret and verifier is None:
            return True
        if "key" in parse_qs(self.request.query, keep_blank_values=True):
            raise BadRequest("send the publish key in the body or an Authorization header, "
                             "not in the URL (proxies log URLs)", field="key")
        bearer = self.bearer()
        if bearer is None:
            if secret:
                return None
            raise Unauthorized("a publisher token is needed (Authorization: Bearer)")
        if self.key_matches(bearer):
            return True
        if verifier is not None and bearer.count(".") == 2:
            return verifier.verify(bearer)
        raise Unauthorized("missing or wrong publish key")

    def check_rights(self, proof: Claims | bool | None, key: str | None,
                     channels: list[str]) -> None:
        """After parsing: the body's key, or the token's ``publish`` claim."""
        if proof is True:
            return
        if isinstance(proof, Claims):
            for channel in channels:
                if not proof.publish.covers(channel):
                    raise Forbidden(f"the token may not publish to {channel}", channel)
            return
        if not self.key_matches(key):
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
        except RecursionError:
            body = None
        if body is None or _deeper_than(body, MAX_JSON_DEPTH):
            raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", field="body")
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
        data = as_data(body["data"] if "data" in body else body["message"])
        fields = []
        for name in ("event", "id", "key"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"'{name}' must be a string", field=name)
            fields.append(check_text(value, name) if value else None)
        return channels, data, fields[0], fields[1], fields[2]

    def post(self) -> defer.Deferred[object]:
        proof = self.authenticate()
        channels, data, name, publisher_id, key = self.parse()
        self.check_rights(proof, key, channels)
        if not channels:
            raise BadRequest("missing field 'channel'", field="channel")
        most = self.application.settings_obj.max_publish_channels
        if most and len(set(channels)) > most:
            raise BadRequest(f"too many channels in one publish: {len(set(channels))} > {most}",
                             field="channel")
        for channel in channels:
            check_channel(channel)
        check_publish(name, publisher_id)
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

