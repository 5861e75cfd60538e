"""``POST /publish/``: Pushpin's publish API (``{"items": [...]}``), so gripcontrol,
pubcontrol and django-grip publish to cyclone-sse unchanged (see ``cyclone_sse.pushpin``
for what each format becomes)."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import jwt
from twisted.internet import defer

from cyclone_sse.auth.tokens import Claims
from cyclone_sse.checks import check_message, loads
from cyclone_sse.errors import Unauthorized
from cyclone_sse.handlers.publish import PublishHandler
from cyclone_sse.pushpin import body_events


class PushpinPublishHandler(PublishHandler):
    """Pushpin's publish endpoint.  Its clients authenticate as they do with Pushpin:
    a JWT signed with the control key (``--grip-key``; its ``iss`` checked against
    ``--grip-iss`` when set), the key itself as a Bearer value, or Basic auth whose
    password is the key; cyclone-sse's own publish key and publisher tokens work too."""

    def authenticate(self) -> Claims | bool | None:
        settings = self.application.settings_obj
        grip_key = settings.grip_key
        if not grip_key and not settings.http_secret and self.application.gate.verifier is None:
            return True  # nothing configured: as open as /publish (loopback only)
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise Unauthorized("unreadable Basic credentials") from None
        elif scheme.lower() != "bearer":
            raise Unauthorized("send the control key or a token (Authorization: Bearer)")
        for key in (grip_key, settings.http_secret):
            if key and value and hmac.compare_digest(value.encode(), key.encode()):
                return True
        if grip_key and value.count(".") == 2:
            try:
                jwt.decode(value, grip_key, algorithms=["HS256"],
                           issuer=settings.grip_iss or None,
                           options={"require": ["exp"], "verify_iss": bool(settings.grip_iss)})
                return True
            except jwt.PyJWTError:
                pass
        if self.application.gate.verifier is not None and value.count(".") == 2:
            return self.application.gate.verifier.verify(value)
        raise Unauthorized("wrong control key or token")

    def post(self) -> defer.Deferred[object]:  # type: ignore[override]
        proof = self.authenticate()
        events = body_events(loads(self.request.body))
        channels = list(dict.fromkeys(e.channel for e in events))
        for event in events:
            check_message(event.channel, event.data, event.name, event.publisher_id)
        self.check_rights(proof, None, channels)
        broker = self.application.broker
        # issued in item order, so the history numbers them in that order
        d = defer.gatherResults([broker.publish(e.channel, e.data, e.name, e.publisher_id)
                                 for e in events], consumeErrors=True)
        d.addCallback(self._published)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d  # type: ignore[return-value]

    def _published(self, results: list[Any]) -> None:
        self.write_json({"status": "ok", "events": [r.as_json() for r in results],
                         "subscribers": sum(r.subscribers for r in results)})
